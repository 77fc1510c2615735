//! What happened on each host and to each run: the jobs wing's domain results, shared by the runner,
//! the history and the report. No SDK or russh types here.

use crate::ssh::{CommandResult, Failure};
use chrono::{DateTime, Utc};
use serde::Serialize;

/// One machine a job runs on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Host {
    /// The EC2 instance id, when the host came from EC2.
    pub instance_id: Option<String>,
    /// Where to connect, or `None` when the instance has no address of the job's kind.
    pub address: Option<String>,
    /// The instance's `Name` tag, for display.
    pub name: Option<String>,
}

impl Host {
    /// The label used in logs and the live view: the instance id, else the address.
    pub fn label(&self) -> &str {
        self.instance_id.as_deref().or(self.address.as_deref()).unwrap_or("?")
    }
}

crate::vocabulary! {
    /// Why a host did not succeed.
    pub enum ErrorKind {
        /// The instance has no address of the job's `address` kind.
        NoAddress = "no_address",
        /// TCP connect or SSH handshake failed or took longer than connect_timeout.
        Connect = "connect",
        /// The server's host key is unknown, changed or revoked.
        HostKey = "host_key",
        /// The server refused the key.
        Auth = "auth",
        /// The job's per-host timeout ended the commands.
        Timeout = "timeout",
        /// A command exited non-zero.
        CommandFailed = "command_failed",
        /// A command was killed by a signal.
        Signal = "signal",
        /// The SSH session broke in an unexpected way.
        Protocol = "protocol",
        /// Not started: the run's error budget (max_errors) was spent.
        Skipped = "skipped",
        /// Stopped because opsd was shutting down.
        Cancelled = "cancelled",
    }
}

impl From<Failure> for ErrorKind {
    fn from(f: Failure) -> ErrorKind {
        match f {
            Failure::Connect => ErrorKind::Connect,
            Failure::HostKey => ErrorKind::HostKey,
            Failure::Auth => ErrorKind::Auth,
            Failure::Timeout => ErrorKind::Timeout,
            Failure::CommandFailed => ErrorKind::CommandFailed,
            Failure::Signal => ErrorKind::Signal,
            Failure::Protocol => ErrorKind::Protocol,
            Failure::Cancelled => ErrorKind::Cancelled,
        }
    }
}

crate::vocabulary! {
    /// How one host ended.
    pub enum HostStatus {
        Ok = "ok",
        Failed = "failed",
        Skipped = "skipped",
        Cancelled = "cancelled",
    }
}

crate::vocabulary! {
    /// What a run (or a firing that started none) came to, as recorded and exported.
    pub enum RunOutcome {
        /// Still going (or its process died: then `interrupted` at the next daemon start).
        Running = "running",
        Succeeded = "succeeded",
        /// Some host failed or was skipped by the error budget.
        Failed = "failed",
        /// Stopped by a signal or the shutdown grace.
        Cancelled = "cancelled",
        /// No instance matched the target.
        NoHosts = "no_hosts",
        /// A firing that started no run (overlap policy, shutdown).
        Skipped = "skipped",
        /// A firing that could not run (the target could not be resolved, the key not read).
        Error = "error",
        /// A scheduled run its daemon left running (killed, power loss).
        Interrupted = "interrupted",
    }
}

crate::vocabulary! {
    /// What started a run.
    pub enum TriggerKind {
        Manual = "manual",
        Schedule = "schedule",
        /// The daemon's start found a firing missed while it was down (`catch_up = true`).
        CatchUp = "catch-up",
    }
}

/// What started a run, with the firing it belongs to.
#[derive(Debug, Clone, Copy)]
pub struct Trigger {
    pub kind: TriggerKind,
    /// The firing time it belongs to, for scheduled runs.
    pub scheduled_for: Option<DateTime<Utc>>,
}

impl Trigger {
    pub const MANUAL: Trigger = Trigger { kind: TriggerKind::Manual, scheduled_for: None };
}

/// One host of a run.
#[derive(Debug, Clone, Serialize)]
pub struct HostResult {
    pub host: Host,
    pub started_at: DateTime<Utc>,
    pub ended_at: DateTime<Utc>,
    pub status: HostStatus,
    pub error_kind: Option<ErrorKind>,
    pub error: Option<String>,
    /// The exit status of the last command that ran.
    pub exit_status: Option<u32>,
    pub commands: Vec<CommandResult>,
    /// Bytes beyond output_limit, counted and not kept.
    pub stdout_dropped: u64,
    pub stderr_dropped: u64,
}

crate::vocabulary! {
    /// Why a scheduled firing started no run (the `reason` label of `opsd_firings_skipped_total`).
    pub enum SkipReason {
        /// The previous run was still running (`overlap = "skip"`).
        Overlap = "overlap",
        /// A firing was already queued behind the running one (`overlap = "queue"`).
        QueueFull = "queue_full",
        /// The daemon was stopping.
        Shutdown = "shutdown",
    }
}
