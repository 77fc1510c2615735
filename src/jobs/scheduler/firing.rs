//! One firing of a scheduled job: the jitter delay, the overlap policy, then the same resolve →
//! SSH → record path as `opsd run`. Every firing ends in the store: as a run, or as a `skipped` or
//! `error` entry that says why.

use super::table::Slot;
use crate::cluster::claims::Claim;
use crate::cluster::Cluster;
use crate::jobs::claims::{self, FiringEnd};
use crate::jobs::execute;
use crate::jobs::history::RunHistory;
use crate::jobs::metrics::JobMetrics;
use crate::jobs::outcome::{HostStatus, RunOutcome, SkipReason, Trigger, TriggerKind};
use crate::jobs::schedule::Overlap;
use crate::jobs::spec::Job;
use crate::jobs::target;
use crate::ssh::{Connector, Services};
use chrono::{DateTime, Utc};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// What every firing shares.
pub struct Context {
    pub runs: RunHistory,
    /// With `[cluster]`: the replicas' shared table, where each firing is claimed by exactly one.
    pub cluster: Option<Cluster>,
    /// How long the cluster table keeps a firing (`history_retention`).
    pub keep: Duration,
    /// Host keys in the store (TOFU, console, lifecycle) and AWS's EC2 Instance Connect and console
    /// output, for the jobs that use them.
    pub ssh: Services,
    pub ec2: aws_sdk_ec2::Client,
    pub page_size: u16,
    pub metrics: JobMetrics,
    /// Cancelled when the daemon stops: firings not yet running are skipped.
    pub stop: CancellationToken,
    /// Cancelled when the shutdown grace has run out: running runs are cancelled.
    pub abort: CancellationToken,
}

pub struct Firing {
    pub job: Arc<Job>,
    pub slot: Arc<Slot>,
    pub at: DateTime<Utc>,
    /// `schedule` or `catch-up`.
    pub kind: TriggerKind,
}

/// Carry out a firing to its end (recorded in the store), in a span that names the job and firing.
pub async fn fire(ctx: Arc<Context>, f: Firing) {
    let span = tracing::info_span!("firing", job = %f.job.name, firing = %f.at, trigger = %f.kind);
    fire_in_span(ctx, f).instrument(span).await
}

async fn fire_in_span(ctx: Arc<Context>, f: Firing) {
    let Some(timing) = f.job.timing.as_ref() else { return };
    // In a cluster, every replica computes this firing; the one that claims it runs it, before
    // its jitter (waiting first would hand it to whichever replica drew the shortest delay).
    if let Some(c) = &ctx.cluster {
        if !c.in_touch() {
            // Unheard lately (paused, cut off): the others may be taking it for gone. It claims
            // nothing, leaving the firing to them; recorded here only.
            let reason = format!(
                "replica {}'s heartbeat has not reached the cluster table lately; the firing is left to the other replicas",
                c.replica
            );
            tracing::warn!(job = %f.job.name, firing = %f.at, "not claimed: {reason}");
            ctx.metrics.run_ended(&f.job.name, RunOutcome::Error, &[], 0.0, 0.0);
            if let Err(e) = ctx.runs.record_firing(&f.job.name, f.kind, f.at, RunOutcome::Error, &reason).await {
                tracing::error!(job = %f.job.name, "cannot record the firing of {}: {e}", f.at);
            }
            return;
        }
        match claims::claim_firing(c, &f.job.name, f.at, f.kind, ctx.keep).await {
            Ok(Claim::Won) => {}
            Ok(Claim::Lost { owner }) => {
                tracing::debug!(job = %f.job.name, firing = %f.at, "the firing is replica {owner}'s");
                return;
            }
            Err(e) => {
                // Never run unclaimed (another replica may run it): recorded here, loudly.
                let reason = format!("cannot claim the firing in the cluster table: {e}; not run here");
                tracing::error!(job = %f.job.name, firing = %f.at, "firing failed: {reason}");
                ctx.metrics.run_ended(&f.job.name, RunOutcome::Error, &[], 0.0, 0.0);
                if let Err(e) = ctx.runs.record_firing(&f.job.name, f.kind, f.at, RunOutcome::Error, &reason).await {
                    tracing::error!(job = %f.job.name, "cannot record the firing of {}: {e}", f.at);
                }
                return;
            }
        }
    }
    let jitter = random_below(timing.jitter);
    if !jitter.is_zero() {
        tracing::debug!(job = %f.job.name, "waiting {} of jitter", humantime::format_duration(jitter));
        tokio::select! {
            _ = tokio::time::sleep(jitter) => {}
            _ = ctx.stop.cancelled() => {
                return skip(&ctx, &f, SkipReason::Shutdown, "the daemon stopped during the firing's jitter delay").await;
            }
        }
    }
    let _permit: Option<OwnedSemaphorePermit> = match timing.overlap {
        Overlap::Allow => None,
        Overlap::Skip => match f.slot.permit.clone().try_acquire_owned() {
            Ok(p) => Some(p),
            Err(_) => {
                let here = ctx.cluster.as_ref().map(|c| format!(" on replica {}", c.replica)).unwrap_or_default();
                let reason = format!("the previous run{} is still running{here} (overlap = skip)", since(&f.slot));
                return skip(&ctx, &f, SkipReason::Overlap, &reason).await;
            }
        },
        Overlap::Queue => match f.slot.permit.clone().try_acquire_owned() {
            Ok(p) => Some(p),
            Err(_) => {
                if f.slot.queued.swap(true, Ordering::SeqCst) {
                    let reason = format!(
                        "a firing is already queued behind the run{} still running (overlap = queue)",
                        since(&f.slot)
                    );
                    return skip(&ctx, &f, SkipReason::QueueFull, &reason).await;
                }
                tracing::info!(job = %f.job.name, "previous run still running; this firing waits for it (overlap = queue)");
                let permit = tokio::select! {
                    p = f.slot.permit.clone().acquire_owned() => p.ok(),
                    _ = ctx.stop.cancelled() => None,
                };
                f.slot.queued.store(false, Ordering::SeqCst);
                match permit {
                    Some(p) => Some(p),
                    None => {
                        return skip(&ctx, &f, SkipReason::Shutdown, "the daemon stopped while the firing was queued")
                            .await
                    }
                }
            }
        },
    };
    if ctx.stop.is_cancelled() {
        return skip(&ctx, &f, SkipReason::Shutdown, "the daemon was stopping when the firing came due").await;
    }
    // A replica the table has not heard from lately may be taken for gone: it starts nothing, by
    // its own clock, before the others could take over its work.
    if let Some(c) = ctx.cluster.as_ref().filter(|c| !c.in_touch()) {
        let why = format!(
            "replica {}'s heartbeat has not reached the cluster table lately, so the others may take it for gone; not run here",
            c.replica
        );
        return error(&ctx, &f, &why).await;
    }
    // In a cluster, the overlap policy spans the replicas: a run of the job holds the job's
    // `running` marker in the table, whichever replica runs it.
    let marked = match (&ctx.cluster, timing.overlap) {
        (Some(c), Overlap::Skip | Overlap::Queue) => match cluster_slot(&ctx, c, &f, timing.overlap).await {
            Some(m) => Some(m),
            None => return,
        },
        _ => None,
    };
    if timing.overlap != Overlap::Allow {
        *f.slot.running_since.lock().unwrap_or_else(|p| p.into_inner()) = Some(Utc::now());
    }
    run(&ctx, &f).await;
    if let (Some(c), Some(())) = (&ctx.cluster, marked) {
        if let Err(e) = claims::release_running(c, &f.job.name, f.at).await {
            tracing::error!(job = %f.job.name, "cluster: cannot clear the job's running marker: {e}; it is cleared when this replica's runs are found abandoned");
        }
    }
}

/// Take the job's cluster-wide `running` marker for this firing: `Some` when taken; `None` when the
/// firing ended without running (skipped, and recorded so). Under `queue`, waits for the marker.
async fn cluster_slot(ctx: &Context, c: &Cluster, f: &Firing, overlap: Overlap) -> Option<()> {
    loop {
        let holder = match claims::take_running(c, &f.job.name, f.at).await {
            Ok(None) => return Some(()),
            Ok(Some(holder)) => holder,
            Err(e) => {
                error(ctx, f, &format!("cannot take the job's running marker in the cluster table: {e}")).await;
                return None;
            }
        };
        let who = format!("the run of {} on replica {}", holder.firing, holder.owner);
        match overlap {
            Overlap::Queue => {
                tracing::info!(job = %f.job.name, "{who} is still running; this firing waits for it (overlap = queue)");
                tokio::select! {
                    _ = tokio::time::sleep(c.heartbeat) => {}
                    _ = ctx.stop.cancelled() => {
                        skip(ctx, f, SkipReason::Shutdown, "the daemon stopped while the firing was queued").await;
                        return None;
                    }
                }
            }
            _ => {
                skip(ctx, f, SkipReason::Overlap, &format!("{who} is still running (overlap = skip)")).await;
                return None;
            }
        }
    }
}

async fn run(ctx: &Context, f: &Firing) {
    let job = &f.job;
    let hosts = tokio::select! {
        h = target::resolve(&ctx.ec2, &job.target, ctx.page_size) => h,
        _ = ctx.abort.cancelled() => return skip(ctx, f, SkipReason::Shutdown, "cancelled at shutdown while resolving the target").await,
    };
    let hosts = match hosts {
        Ok(h) => h,
        Err(e) => return error(ctx, f, &format!("resolving the target: {e}")).await,
    };
    let connector = match Connector::load(&job.ssh, ctx.ssh.clone()).await {
        Ok(c) => Arc::new(c),
        Err(e) => return error(ctx, f, &e.to_string()).await,
    };
    let req = execute::Request {
        job,
        hosts,
        store: &ctx.runs,
        connector,
        trigger: Trigger { kind: f.kind, scheduled_for: Some(f.at) },
        live_output: false,
    };
    match execute::run(req, |_, _| {}, ctx.abort.clone()).await {
        Ok(report) => {
            let c = &report.counts;
            let end = FiringEnd {
                outcome: c.outcome(),
                hosts: c.total,
                ok: c.ok,
                failed: c.failed + c.cancelled,
                skipped: c.skipped,
                run_id: Some(report.run_id),
                started_at: Some(report.started_at),
                ended_at: report.ended_at,
                reason: None,
            };
            finish_claim(ctx, f, &end).await;
            let secs = (report.ended_at - report.started_at).num_milliseconds() as f64 / 1000.0;
            let hosts = [
                (HostStatus::Ok, c.ok),
                (HostStatus::Failed, c.failed),
                (HostStatus::Skipped, c.skipped),
                (HostStatus::Cancelled, c.cancelled),
            ];
            ctx.metrics.run_ended(
                &job.name,
                c.outcome(),
                &hosts,
                secs,
                report.ended_at.timestamp_millis() as f64 / 1e3,
            );
        }
        Err(e) => {
            tracing::error!(job = %job.name, "the firing of {} could not run: {e}", f.at);
            ctx.metrics.run_ended(&job.name, RunOutcome::Error, &[], 0.0, 0.0);
            finish_claim(ctx, f, &FiringEnd::without_run(RunOutcome::Error, &e.to_string())).await;
        }
    }
}

fn since(slot: &Slot) -> String {
    match *slot.running_since.lock().unwrap_or_else(|p| p.into_inner()) {
        Some(t) => format!(" (started {})", t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        None => String::new(),
    }
}

async fn skip(ctx: &Context, f: &Firing, category: SkipReason, reason: &str) {
    tracing::warn!(job = %f.job.name, firing = %f.at, "firing skipped: {reason}");
    ctx.metrics.firing_skipped(&f.job.name, category);
    record(ctx, f, RunOutcome::Skipped, reason).await;
}

async fn error(ctx: &Context, f: &Firing, reason: &str) {
    tracing::error!(job = %f.job.name, firing = %f.at, "firing failed: {reason}");
    ctx.metrics.run_ended(&f.job.name, RunOutcome::Error, &[], 0.0, 0.0);
    record(ctx, f, RunOutcome::Error, reason).await;
}

async fn record(ctx: &Context, f: &Firing, outcome: RunOutcome, reason: &str) {
    if let Err(e) = ctx.runs.record_firing(&f.job.name, f.kind, f.at, outcome, reason).await {
        tracing::error!(job = %f.job.name, "cannot record the firing of {}: {e}", f.at);
    }
    finish_claim(ctx, f, &FiringEnd::without_run(outcome, reason)).await;
}

/// In a cluster, complete this replica's claim of the firing with how it ended.
async fn finish_claim(ctx: &Context, f: &Firing, end: &FiringEnd) {
    let Some(c) = &ctx.cluster else { return };
    if let Err(e) = claims::finish_firing(c, &f.job.name, f.at, end).await {
        tracing::error!(job = %f.job.name, firing = %f.at, "cluster: cannot record how the firing ended: {e}");
    }
}

/// A uniformly random duration in `[0, max)`.
fn random_below(max: Duration) -> Duration {
    let ms = max.as_millis() as u64;
    if ms == 0 {
        Duration::ZERO
    } else {
        Duration::from_millis(fastrand::u64(0..ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_below_its_bound_and_spreads() {
        assert_eq!(random_below(Duration::ZERO), Duration::ZERO);
        let max = Duration::from_secs(120);
        let draws: Vec<Duration> = (0..2000).map(|_| random_below(max)).collect();
        assert!(draws.iter().all(|d| *d < max));
        // Spread: every quarter of the range is hit.
        for q in 0..4 {
            let (lo, hi) = (max * q / 4, max * (q + 1) / 4);
            assert!(draws.iter().any(|d| *d >= lo && *d < hi), "no draw in quarter {q}");
        }
    }
}
