//! What happened on each host: the domain results shared by the SSH layer, the runner, the store and
//! the report. No SDK or russh types here.

use crate::fleet::Host;
use chrono::{DateTime, Utc};
use serde::{Serialize, Serializer};

/// Why a host did not succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The instance has no address of the job's `address` kind.
    NoAddress,
    /// TCP connect or SSH handshake failed or took longer than connect_timeout.
    Connect,
    /// The server's host key is unknown, changed or revoked.
    HostKey,
    /// The server refused the key.
    Auth,
    /// The job's per-host timeout ended the commands.
    Timeout,
    /// A command exited non-zero.
    CommandFailed,
    /// A command was killed by a signal.
    Signal,
    /// The SSH session broke in an unexpected way.
    Protocol,
    /// Not started: the run's error budget (max_errors) was spent.
    Skipped,
    /// Stopped because opsd was shutting down.
    Cancelled,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NoAddress => "no_address",
            ErrorKind::Connect => "connect",
            ErrorKind::HostKey => "host_key",
            ErrorKind::Auth => "auth",
            ErrorKind::Timeout => "timeout",
            ErrorKind::CommandFailed => "command_failed",
            ErrorKind::Signal => "signal",
            ErrorKind::Protocol => "protocol",
            ErrorKind::Skipped => "skipped",
            ErrorKind::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<ErrorKind> {
        use ErrorKind::*;
        [NoAddress, Connect, HostKey, Auth, Timeout, CommandFailed, Signal, Protocol, Skipped, Cancelled]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HostStatus {
    Ok,
    Failed,
    Skipped,
    Cancelled,
}

impl HostStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            HostStatus::Ok => "ok",
            HostStatus::Failed => "failed",
            HostStatus::Skipped => "skipped",
            HostStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> HostStatus {
        match s {
            "ok" => HostStatus::Ok,
            "skipped" => HostStatus::Skipped,
            "cancelled" => HostStatus::Cancelled,
            _ => HostStatus::Failed,
        }
    }
}

/// One command on one host. Output is what was kept within the host's output_limit.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CommandResult {
    pub command: String,
    pub exit_status: Option<u32>,
    pub exit_signal: Option<String>,
    #[serde(serialize_with = "lossy")]
    pub stdout: Vec<u8>,
    #[serde(serialize_with = "lossy")]
    pub stderr: Vec<u8>,
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

fn lossy<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(b))
}
