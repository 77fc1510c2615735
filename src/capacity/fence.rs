//! The capacity leader's lease as the controller uses it. Alone (no `[cluster]`), every step may
//! act. In a cluster, the controller decides only while this replica leads, and before every step
//! that changes the fleet (DRAINING, a target, a termination, putting victims back) it confirms the
//! lease with a write conditional on its epoch ([`Fence::confirm`]); while it waits on a drain it
//! checks its own deadline at every poll ([`Fence::check`]). A refused or late confirmation is
//! [`Fenced`]: the step is not taken and the decision is recorded `fenced`.
//!
//! The lease's item carries the wing's journal, so the next leader finishes what a fenced or dead
//! one left: `victims` (the EC2 ids of a scale-in whose drain began, with `victims_epoch`) and the
//! cooldowns (`last_scale_out_at`, `last_scale_in_at`, wall clock; a cooldown is not a correctness
//! matter, so seconds of skew between replicas only shift it).

use crate::cluster::lease::{Fenced, Lease};
use crate::cluster::table::{get_n, get_s, n, s};
use chrono::{DateTime, Utc};
use std::sync::Arc;

const VICTIMS: &str = "victims";
const VICTIMS_EPOCH: &str = "victims_epoch";
const LAST_SCALE_OUT: &str = "last_scale_out_at";
const LAST_SCALE_IN: &str = "last_scale_in_at";

/// The lease name of the controller of `scope`.
pub fn lease_name(scope: &str) -> String {
    format!("capacity#{scope}")
}

/// What a previous leader left on the lease's item.
#[derive(Debug, Default)]
pub struct Journal {
    /// A scale-in's victims whose drain began under an earlier epoch, and that epoch.
    pub victims: Option<(Vec<String>, u64)>,
    pub last_scale_out: Option<DateTime<Utc>>,
    pub last_scale_in: Option<DateTime<Utc>>,
}

#[derive(Clone, Default)]
pub struct Fence(Option<Arc<Lease>>);

impl Fence {
    /// No cluster: this daemon is the only controller.
    pub fn alone() -> Fence {
        Fence(None)
    }

    pub fn leased(lease: Arc<Lease>) -> Fence {
        Fence(Some(lease))
    }

    /// Whether there is a lease (a cluster) at all.
    pub fn clustered(&self) -> bool {
        self.0.is_some()
    }

    /// Whether this replica leads now, and in which epoch (alone: epoch 0).
    pub fn leading(&self) -> Option<u64> {
        match &self.0 {
            None => Some(0),
            Some(l) => l.leading(),
        }
    }

    /// By this replica's own clock only: may it still act?
    pub fn check(&self) -> Result<(), Fenced> {
        match &self.0 {
            None => Ok(()),
            Some(l) => l.check().map(|_| ()),
        }
    }

    /// Confirm the lease before a step that changes the fleet.
    pub async fn confirm(&self) -> Result<(), Fenced> {
        match &self.0 {
            None => Ok(()),
            Some(l) => l.fence(&[], &[]).await.map(|_| ()),
        }
    }

    /// Run `call`, an AWS request that changes the fleet, within what is left of the lease: once
    /// the deadline passes it is abandoned, so no retry of it is sent after this replica may have
    /// been replaced (a request already sent may still land: the deadline's margin covers its trip).
    pub async fn bounded<T, E>(
        &self,
        call: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<Result<T, E>, Fenced> {
        let Some(l) = &self.0 else { return Ok(call.await) };
        let left = l.remaining()?;
        tokio::time::timeout(left, call).await.map_err(|_| l.ran_out())
    }

    /// Confirm the lease and note `victims` as a scale-in about to drain them.
    pub async fn draining(&self, victims: &[String]) -> Result<(), Fenced> {
        let Some(l) = &self.0 else { return Ok(()) };
        let epoch = l.check()?;
        l.fence(&[(VICTIMS, s(victims.join(","))), (VICTIMS_EPOCH, n(epoch))], &[]).await.map(|_| ())
    }

    /// A scale-in's victims are no longer this leader's to put back (terminated, or back ACTIVE).
    pub async fn drained(&self) -> Result<(), Fenced> {
        let Some(l) = &self.0 else { return Ok(()) };
        l.fence(&[], &[VICTIMS, VICTIMS_EPOCH]).await.map(|_| ())
    }

    /// Note when a scale-out or scale-in ended, for the cooldowns of whoever leads next.
    pub async fn acted(&self, scale_in: bool, at: DateTime<Utc>) -> Result<(), Fenced> {
        let Some(l) = &self.0 else { return Ok(()) };
        let at = s(at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
        if scale_in {
            l.fence(&[(LAST_SCALE_IN, at)], &[VICTIMS, VICTIMS_EPOCH]).await.map(|_| ())
        } else {
            l.fence(&[(LAST_SCALE_OUT, at)], &[]).await.map(|_| ())
        }
    }

    /// What the lease's item holds from earlier leaders (nothing when alone).
    pub async fn journal(&self) -> Result<Journal, crate::cluster::table::TableError> {
        let Some(l) = &self.0 else { return Ok(Journal::default()) };
        let Some(item) = l.item().await? else { return Ok(Journal::default()) };
        let at = |k| get_s(&item, k).and_then(|t| DateTime::parse_from_rfc3339(t).ok()).map(|t| t.with_timezone(&Utc));
        let victims = get_s(&item, VICTIMS)
            .filter(|v| !v.is_empty())
            .map(|v| (v.split(',').map(str::to_string).collect(), get_n(&item, VICTIMS_EPOCH).unwrap_or(0)));
        Ok(Journal { victims, last_scale_out: at(LAST_SCALE_OUT), last_scale_in: at(LAST_SCALE_IN) })
    }
}
