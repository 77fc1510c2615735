//! The cluster edge: several opsd daemons acting as one through a DynamoDB table (`[cluster]`).
//! It knows no capability: it gives the wings a table ([`table`]), membership with liveness judged
//! on each replica's own clock ([`members`]), claims that exactly one replica wins ([`claims`]),
//! the judgement of whether work another replica holds is abandoned ([`Cluster::abandoned`]), and
//! leases with fencing, so one replica at a time acts for a wing ([`lease`]).
//! Each wing owns its items in the table (`jobs::claims` for firings). `opsd cluster init|status`
//! are in [`commands`].

pub mod claims;
pub mod commands;
pub mod host_keys;
pub mod lease;
pub mod members;
pub mod metrics;
pub mod settings;
pub mod table;

pub use settings::ClusterSettings;

use members::Liveness;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use table::{Table, TableError};
use tokio::time::Instant;

/// This replica's handle on the cluster; cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    pub table: Table,
    /// This replica's name.
    pub replica: String,
    /// This process's incarnation (random at every start), carried by the work it holds.
    pub incarnation: String,
    pub liveness: Arc<Liveness>,
    /// When this replica began watching the others' heartbeats.
    pub watching_since: Instant,
    /// How often heartbeats are written (and the members read).
    pub heartbeat: Duration,
    /// When this replica's last heartbeat landed.
    pub beaten: Arc<Mutex<Instant>>,
    /// The work items (`pk`, `sk`) this process holds: claimed or being claimed, not yet ended.
    held: Arc<Mutex<HashSet<(String, String)>>>,
}

impl Cluster {
    pub fn new(table: Table, me: &members::Me, liveness: Arc<Liveness>, heartbeat: Duration) -> Cluster {
        let now = Instant::now();
        Cluster {
            table,
            replica: me.replica.clone(),
            incarnation: me.incarnation.clone(),
            liveness,
            watching_since: now,
            heartbeat,
            beaten: Arc::new(Mutex::new(now)),
            held: Arc::default(),
        }
    }

    /// Note that this process holds (or is about to claim) the work at `pk`/`sk`.
    pub fn hold(&self, pk: &str, sk: &str) {
        self.held.lock().unwrap_or_else(|p| p.into_inner()).insert((pk.to_string(), sk.to_string()));
    }

    /// This process no longer holds the work at `pk`/`sk` (ended and recorded, or lost).
    pub fn release(&self, pk: &str, sk: &str) {
        self.held.lock().unwrap_or_else(|p| p.into_inner()).remove(&(pk.to_string(), sk.to_string()));
    }

    fn holds(&self, pk: &str, sk: &str) -> bool {
        self.held.lock().unwrap_or_else(|p| p.into_inner()).contains(&(pk.to_string(), sk.to_string()))
    }

    /// Whether this replica has been heard lately: a heartbeat landed within two thirds of the
    /// member timeout. The others take it for dead only once its heartbeat has stood still for a
    /// whole timeout as they read it, which begins no earlier than its last beat landed; so when it
    /// is not in touch it starts no work, fencing itself by its own clock before they can.
    pub fn in_touch(&self) -> bool {
        self.beaten.lock().unwrap_or_else(|p| p.into_inner()).elapsed() < self.liveness.timeout() * 2 / 3
    }

    /// Whether work `owner` (in `incarnation`) holds at `pk`/`sk` is abandoned, judged on a fresh
    /// read of the owner's heartbeat item: its owner left (no item: a replica writes its item before
    /// it claims anything), started anew (another incarnation), or is dead by this replica's own
    /// reads; or it is this process's own work that no task of it holds any more. `read` keeps the
    /// heartbeat items read so far in one sweep, so each owner is read once per sweep.
    pub async fn abandoned(
        &self,
        pk: &str,
        sk: &str,
        owner: &str,
        incarnation: &str,
        read: &mut HashMap<String, Option<members::Member>>,
    ) -> Result<bool, TableError> {
        if owner == self.replica && incarnation == self.incarnation {
            return Ok(!self.holds(pk, sk));
        }
        if owner == self.replica {
            return Ok(true);
        }
        if !read.contains_key(owner) {
            read.insert(owner.to_string(), members::get(&self.table, owner).await?);
        }
        Ok(match &read[owner] {
            None => true,
            Some(m) if m.incarnation != incarnation => true,
            Some(_) => self.liveness.is_dead(owner, incarnation),
        })
    }
}

/// A fresh incarnation id: 64 random bits.
pub fn incarnation() -> String {
    format!("{:016x}", fastrand::u64(..))
}
