//! opsd: an operations-automation daemon for AWS fleets. ARCHITECTURE.md has the code map, the
//! "where does a change go" table and the invariants; in short:
//!
//! Three wings, one per capability; none imports another:
//! - [`jobs`]: scheduled and by-hand SSH jobs over EC2 instances found by tag.
//! - [`lifecycle`]: the Auto Scaling lifecycle-hook consumer (SQS, secondary ENIs).
//! - [`capacity`]: the ECS capacity controller (observe, decide, act on the fleet).
//!
//! Edges every wing may use, which know no capability:
//! - [`store`]: SQLite plumbing (open, lock, WAL, migrations, calls on a blocking thread).
//! - [`ssh`]: the only russh user; its settings and the TOFU pins.
//! - [`aws`]: the SDK config (timeouts, retries, endpoints) and AWS errors.
//! - [`cluster`]: several daemons as one on DynamoDB: the table, membership, claims.
//! - [`metrics`]: the registry the wings register in, and `GET /metrics`.
//! - [`units`], [`backoff`], [`vocab`], [`diag`], [`tomlfile`], [`output`], [`exit`], [`logging`].
//!
//! What puts them together: [`config`] (the file, one section per wing), [`schema`] (the
//! migrations in order), [`cli`] and [`app`] (the commands), [`daemon`] (the composition root).

pub mod app;
pub mod aws;
pub mod backoff;
pub mod capacity;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod daemon;
pub mod diag;
pub mod docs;
pub mod exit;
pub mod jobs;
pub mod lifecycle;
pub mod logging;
pub mod metrics;
pub mod output;
pub mod schema;
pub mod ssh;
pub mod store;
pub mod tomlfile;
pub mod units;
pub mod vocab;

/// The version and the git commit this binary was built from (`opsd --version`, the daemon's banner,
/// `opsd_build_info`).
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("OPSD_COMMIT"), ")");
