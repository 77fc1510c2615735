//! History retention across the wings: what the store holds older than `history_retention` (runs
//! with their hosts and output, lifecycle actions, capacity decisions) is deleted at start and then
//! hourly. Runs go in short transactions with pauses between them, so recording waits for one batch
//! at most; what each wing reads back is kept whatever its age (each wing's `prune` says what).

use crate::capacity::history::DecisionHistory;
use crate::jobs::history::RunHistory;
use crate::lifecycle::history::ActionHistory;
use crate::store::{Store, StoreError};
use chrono::Utc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const EVERY: Duration = Duration::from_secs(3600);
/// One transaction deletes at most this many runs, with at most [`BATCH_HOSTS`] host records.
const BATCH_RUNS: usize = 500;
const BATCH_HOSTS: i64 = 2000;
/// Between transactions, so a long backlog (the first start after an upgrade) never holds the store.
const PAUSE: Duration = Duration::from_millis(50);

/// What one pass deleted.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Pruned {
    runs: usize,
    lifecycle_actions: usize,
    capacity_decisions: usize,
}

pub async fn run(store: Store, retention: Duration, ec2: aws_sdk_ec2::Client, stop: CancellationToken) {
    loop {
        prune(&store, retention, &stop).await;
        // TOFU pins of instances that are gone can never be used again.
        match crate::ssh::pins::prune_gone(&store, &ec2).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(pins = n, "host keys: deleted the TOFU pins of {n} instances that are gone"),
            Err(e) => {
                tracing::warn!("host keys: cannot prune the pins of instances that are gone: {e}; retrying in an hour")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(EVERY) => {}
            _ = stop.cancelled() => return,
        }
    }
}

async fn prune(store: &Store, retention: Duration, stop: &CancellationToken) {
    let Some(cutoff) = chrono::Duration::from_std(retention).ok().and_then(|d| Utc::now().checked_sub_signed(d)) else {
        return; // Longer than the calendar: nothing is that old.
    };
    let mut total = Pruned::default();
    if stop.is_cancelled() {
        return;
    }
    // Lifecycle actions and capacity decisions: few rows, one statement each.
    match ActionHistory::new(store.clone()).prune(cutoff).await {
        Ok(n) => total.lifecycle_actions = n,
        Err(e) => warn(e),
    }
    match DecisionHistory::new(store.clone()).prune(cutoff).await {
        Ok(n) => total.capacity_decisions = n,
        Err(e) => warn(e),
    }
    let runs = RunHistory::new(store.clone());
    while !stop.is_cancelled() {
        match runs.prune(cutoff, BATCH_RUNS, BATCH_HOSTS).await {
            Ok((n, more)) => {
                total.runs += n;
                if !more {
                    break;
                }
            }
            Err(e) => {
                warn(e);
                break;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(PAUSE) => {}
            _ = stop.cancelled() => break,
        }
    }
    if total != Pruned::default() {
        tracing::info!(
            runs = total.runs,
            lifecycle_actions = total.lifecycle_actions,
            capacity_decisions = total.capacity_decisions,
            "history: deleted what is older than history_retention ({})",
            humantime::format_duration(retention)
        );
    }
}

fn warn(e: StoreError) {
    tracing::warn!("history: deleting what is older than history_retention failed: {e}; retrying in an hour");
}
