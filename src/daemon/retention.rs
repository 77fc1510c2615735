//! History retention: what the store holds older than `history_retention` (runs with their hosts
//! and output, lifecycle actions, capacity decisions) is deleted at start and then hourly, in short
//! transactions with pauses between them, so recording waits for one batch at most. What the
//! daemon reads back is kept whatever its age (see [`Store::prune`]).

use crate::store::{Pruned, Store};
use chrono::Utc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const EVERY: Duration = Duration::from_secs(3600);
/// One transaction deletes at most this many runs, with at most [`BATCH_HOSTS`] host records.
const BATCH_RUNS: usize = 500;
const BATCH_HOSTS: i64 = 2000;
/// Between transactions, so a long backlog (the first start after an upgrade) never holds the store.
const PAUSE: Duration = Duration::from_millis(50);

pub async fn run(store: Store, retention: Duration, stop: CancellationToken) {
    loop {
        prune(&store, retention, &stop).await;
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
    let mut first = true;
    while !stop.is_cancelled() {
        match store.prune(cutoff, BATCH_RUNS, BATCH_HOSTS, first).await {
            Ok((p, more)) => {
                total.runs += p.runs;
                total.lifecycle_actions += p.lifecycle_actions;
                total.capacity_decisions += p.capacity_decisions;
                if !more {
                    break;
                }
            }
            Err(e) => {
                tracing::warn!(
                    "history: deleting what is older than history_retention failed: {e}; retrying in an hour"
                );
                break;
            }
        }
        first = false;
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
