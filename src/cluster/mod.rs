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
    pub liveness: Arc<Liveness>,
    /// When this replica began watching the others' heartbeats.
    pub watching_since: Instant,
}

impl Cluster {
    /// Whether `replica` is dead, as this replica has seen its heartbeat (see [`members`]).
    pub fn is_dead(&self, replica: &str) -> bool {
        replica != self.replica && self.liveness.is_dead(replica, self.watching_since)
    }
}
