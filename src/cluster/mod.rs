//! The cluster edge: several opsd daemons acting as one through a DynamoDB table (`[cluster]`).
//! It knows no capability: it gives the wings a table ([`table`]), membership with liveness judged
//! on each replica's own clock ([`members`]), and claims that exactly one replica wins
//! ([`claims`]). Each wing owns its items in the table (`jobs::claims` for firings).
//! `opsd cluster init|status` are in [`commands`].

pub mod claims;
pub mod commands;
pub mod members;
pub mod settings;
pub mod table;

pub use settings::ClusterSettings;

use members::Liveness;
use std::sync::Arc;
use table::Table;
use tokio::time::Instant;

/// This replica's handle on the cluster; cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    pub table: Table,
    /// This replica's name.
    pub replica: String,
    /// This process's incarnation (random at every start), carried by its claims.
    pub incarnation: String,
    pub liveness: Arc<Liveness>,
    /// When this replica began watching the others' heartbeats.
    pub watching_since: Instant,
    /// How often heartbeats are written (and the members read).
    pub heartbeat: std::time::Duration,
}

impl Cluster {
    /// Whether `replica` is dead, as this replica has seen its heartbeat (see [`members`]).
    pub fn is_dead(&self, replica: &str) -> bool {
        replica != self.replica && self.liveness.is_dead(replica, self.watching_since)
    }

    /// Whether work that `owner` (in `incarnation`) holds is abandoned: this replica's own from an
    /// earlier start, or a replica that died or has started again since.
    pub fn abandoned(&self, owner: &str, incarnation: &str) -> bool {
        if owner == self.replica {
            return incarnation != self.incarnation;
        }
        if self.is_dead(owner) {
            return true;
        }
        self.liveness.incarnation(owner).is_some_and(|now| now != incarnation)
    }

    /// Whether this replica has watched the others long enough to judge them.
    pub fn judging(&self) -> bool {
        self.watching_since.elapsed() >= self.liveness.timeout()
    }
}

/// A fresh incarnation id: 64 random bits.
pub fn incarnation() -> String {
    format!("{:016x}", fastrand::u64(..))
}
