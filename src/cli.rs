//! The command line: `opsd run | daemon | validate | jobs | history | lifecycle | capacity | cluster | hosts`. Each
//! wing owns its commands' arguments (`jobs::commands`, `lifecycle::status`, `capacity::status`).

use crate::capacity::status::CapacityCommand;
use crate::cluster::commands::ClusterCommand;
use crate::jobs::commands::{HistoryArgs, JobsArgs, RunArgs};
use crate::lifecycle::status::LifecycleCommand;
use crate::ssh::keys_command::HostsCommand;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "opsd",
    version = crate::VERSION,
    about = "Operations automation for AWS fleets: tag-targeted SSH jobs by hand or on schedule, Auto Scaling lifecycle hooks, ECS capacity",
    after_help = crate::exit::EXIT_CODES_HELP,
)]
pub struct Cli {
    /// The config file [default: /etc/opsd/opsd.toml when it exists]. `OPSD_…` variables override its
    /// values, e.g. OPSD_SSH__USER=ec2-user or OPSD_RUN__MAX_CONCURRENCY=20.
    #[arg(long, global = true, env = "OPSD_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a job now: resolve its EC2 instances by tag, SSH to them in parallel, run its commands.
    #[command(after_help = concat!(
        "Examples:\n  opsd run hello-world\n  opsd run hello-world --dry-run\n  opsd run jobs/rotate.toml --max-concurrency 10 --output json\n\n",
        "Exit codes:\n  0   every host succeeded\n  1   some host failed (command exit != 0, timeout, connect/auth/host-key error, skipped by max_errors, cancelled)\n",
        "  3   no instance matched the target\n  64  bad job file or config (or its script cannot be read)\n  69  AWS unreachable or access denied\n  70  the run history could not be written"
    ))]
    Run(RunArgs),
    /// Run as a service: fire every job in jobs_dir on its schedule until SIGTERM.
    #[command(after_help = concat!(
        "Runs under systemd (Type=notify; see systemd/opsd.service). Reloads the config and jobs on SIGHUP\n",
        "(systemctl reload opsd) and jobs when files in jobs_dir change; a broken file keeps its last good version.\n",
        "SIGTERM: running jobs get shutdown_grace to finish, then are cancelled and recorded.\n\n",
        "Examples:\n  opsd daemon\n  opsd --config /etc/opsd/opsd.toml daemon\n  OPSD_LOG=debug opsd daemon\n\n",
        "Exit codes:\n  0   stopped by SIGTERM/SIGINT after shutdown\n  64  bad config, or jobs_dir unreadable\n",
        "  69  another daemon uses the same state_dir, or metrics_listen cannot be bound\n",
        "  70  the run history cannot be opened"
    ))]
    Daemon,
    /// The Auto Scaling lifecycle-hook consumer ([lifecycle] in the config).
    #[command(subcommand)]
    Lifecycle(LifecycleCommand),
    /// The Spot Fleet capacity controller ([capacity] in the config).
    #[command(subcommand)]
    Capacity(CapacityCommand),
    /// Several daemons as one on a DynamoDB table ([cluster] in the config).
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// The hosts opsd reaches: the host keys it trusts for them.
    #[command(subcommand)]
    Hosts(HostsCommand),
    /// For packagers: write the man pages and the bash, zsh and fish completions into DIR.
    #[command(hide = true, name = "package-docs")]
    PackageDocs {
        /// Where: DIR/man and DIR/completions.
        dir: PathBuf,
    },
    /// Check the config and job files; print every problem as file:line:col: field: message.
    #[command(
        after_help = "Examples:\n  opsd validate                 # the config and every job in jobs_dir\n  opsd validate jobs/new.toml   # one file\n\nExit codes:\n  0   all good\n  64  some file is bad"
    )]
    Validate {
        /// Job files or directories [default: the config's jobs_dir].
        paths: Vec<PathBuf>,
    },
    /// List the jobs in jobs_dir with their schedule, target and next firings (in the job's time
    /// zone and UTC), marking what a DST change did to a firing.
    #[command(
        after_help = "Examples:\n  opsd jobs\n  opsd jobs nightly-backup --next 10\n  opsd jobs --at 2026-03-08T00:00:00Z --next 20 nightly-backup   # across a DST change\n\nExit codes:\n  0   listed\n  64  no such job, or the jobs directory cannot be read"
    )]
    Jobs(JobsArgs),
    /// Show recorded runs (with [cluster]: the whole cluster's firings, each with the replica that
    /// ran it); with --run, every host's result and captured output from this replica's store.
    #[command(
        after_help = "Examples:\n  opsd history\n  opsd history hello-world --limit 5\n  opsd history --run 42\n  opsd history --run 42 --output json\n  opsd history --local\n\nExit codes:\n  0   shown\n  64  no such run\n  69  the cluster table could not be read\n  70  the history could not be read"
    )]
    History(HistoryArgs),
}
