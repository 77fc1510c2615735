//! opsd: an operations-automation daemon for AWS fleets.
//!
//! Code map (one line per module; ARCHITECTURE.md has the invariants):
//! - [`cli`]: the command line (clap), exit codes in `--help`.
//! - [`exit`]: the exit codes opsd promises to scripts.
//! - [`config`]: the daemon config file + `OPSD_…` environment overrides, validated at load.
//! - [`diag`]: `file:line:col: field: message` diagnostics for bad input.
//! - [`job`]: job files: spec, units, schedules and firing times, loading with precise errors.
//! - [`aws`]: the one place that builds the AWS SDK config (timeouts, retries, endpoints).
//! - [`fleet`]: EC2 target resolution: tags and states to hosts, paginated.
//! - [`ssh`]: the only russh user: connect, host-key policy, auth, exec with caps and timeouts.
//! - [`outcome`]: per-host and per-command results, the domain types everything else shares.
//! - [`runner`]: fan-out of one job over its hosts: semaphore, deadlines, error budget.
//! - [`store`]: the embedded run history (SQLite, WAL).
//! - [`tomlfile`]: TOML files deserialized with every bad key and value reported, located.
//! - [`report`]: what a run prints: live view, summary, JSON document.
//! - [`execute`]: one recorded run over resolved hosts, shared by `opsd run` and the daemon.
//! - [`daemon`]: `opsd daemon`: schedules, reload, sd_notify, graceful shutdown.
//! - [`lifecycle`]: the Auto Scaling lifecycle-hook consumer (SQS, secondary ENIs).
//! - [`capacity`]: the Spot Fleet capacity controller: observe ECS, decide (pure), act on the fleet.
//! - [`metrics`]: Prometheus series and the `/metrics` endpoint.
//! - [`logging`]: the tracing subscriber (text or JSON).
//! - [`app`]: the commands (`run`, `daemon`, `validate`, `jobs`, `history`, `lifecycle status`).

pub mod app;
pub mod aws;
pub mod capacity;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod diag;
pub mod execute;
pub mod exit;
pub mod fleet;
pub mod job;
pub mod lifecycle;
pub mod logging;
pub mod metrics;
pub mod outcome;
pub mod report;
pub mod runner;
pub mod ssh;
pub mod store;
pub mod tomlfile;
