//! `[cluster]` in the config: the DynamoDB table several daemons share, this replica's name, and
//! the timings of membership. Without the section opsd runs alone (embedded SQLite only).

use crate::diag::Invalid;
use crate::units::HumanDuration;
use serde::Deserialize;
use std::time::Duration;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClusterSettings {
    /// The DynamoDB table (`opsd cluster init` creates it).
    pub table: String,
    /// This replica's name, unique in the cluster (default: the host name).
    #[serde(default)]
    pub replica: Option<String>,
    /// How often this replica writes its heartbeat.
    #[serde(default = "default_heartbeat")]
    pub heartbeat_interval: HumanDuration,
    /// A member whose heartbeat has not changed for this long (on the observer's own clock) is
    /// dead: the firings it was running are recorded `interrupted`.
    #[serde(default = "default_member_timeout")]
    pub member_timeout: HumanDuration,
    /// How long the capacity leader's lease lasts: a leader that crashed is replaced after about
    /// this long; one that cannot renew it stops acting before it ends.
    #[serde(default = "default_leader_lease")]
    pub leader_lease: HumanDuration,
}

/// As amazon-dynamodb-lock-client's default (20 s): renewed every third, a crashed leader is
/// replaced within about half a minute, and a slow DynamoDB answer does not cost the lease.
fn default_leader_lease() -> HumanDuration {
    HumanDuration(Duration::from_secs(20))
}

/// Often enough that a dead replica is noticed within seconds; one small write per interval.
fn default_heartbeat() -> HumanDuration {
    HumanDuration(Duration::from_secs(5))
}

/// Six missed heartbeats: a replica busy for a few seconds (a GC-free process, but a loaded host)
/// is not taken for dead.
fn default_member_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}

impl ClusterSettings {
    /// What the section's types cannot say by themselves.
    pub fn check(&self) -> Vec<Invalid> {
        let mut bad = Vec::new();
        if !valid_table_name(&self.table) {
            bad.push(Invalid::new(
                "table",
                format!("{:?} is not a DynamoDB table name: use 3 to 255 letters, digits, '_', '-' or '.'", self.table),
            ));
        }
        if let Some(r) = &self.replica {
            if r.is_empty() || r.len() > 64 || !r.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
                bad.push(Invalid::new("replica", format!("{r:?}: use 1 to 64 letters, digits, '-', '_' or '.'")));
            }
        }
        if self.member_timeout.0 < self.heartbeat_interval.0 * 3 {
            bad.push(Invalid::new(
                "member_timeout",
                format!(
                    "{} is less than three heartbeat_interval ({}): a live replica would be taken for dead; raise it",
                    self.member_timeout, self.heartbeat_interval
                ),
            ));
        }
        if self.leader_lease.0 < Duration::from_secs(3) {
            bad.push(Invalid::new(
                "leader_lease",
                format!(
                    "{} is too short: it is renewed every third of it, and each renewal is a DynamoDB write; use 3s or more",
                    self.leader_lease
                ),
            ));
        }
        bad
    }

    /// This replica's name: the configured one, else the host name.
    pub fn replica(&self) -> String {
        self.replica.clone().unwrap_or_else(host_name)
    }
}

fn valid_table_name(name: &str) -> bool {
    (3..=255).contains(&name.len()) && name.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
}

/// The host's name (`/proc/sys/kernel/hostname`), or "opsd" when it cannot be read.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "opsd".into())
}
