//! One run of a job over resolved hosts, recorded in the store: what `opsd run` and the daemon's
//! firings share. The caller watches the runner's events (live view, logs); this module records.

use super::history::{RunEnd, RunHistory, RunStart};
use super::outcome::{Host, HostResult, HostStatus, RunOutcome, Trigger};
use super::report::Counts;
use super::runner::{self, Event, Plan};
use super::script;
use super::spec::Job;
use crate::ssh::Connector;
use crate::store::StoreError;
use chrono::{DateTime, Utc};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Events buffered between the runner and the watcher: enough to absorb bursts, small enough that
/// a slow terminal slows the run instead of growing memory.
const EVENT_BUFFER: usize = 256;

/// A finished run.
#[derive(Debug)]
pub struct Report {
    pub run_id: i64,
    pub started_at: DateTime<Utc>,
    pub ended_at: DateTime<Utc>,
    /// One per host, in the hosts' order.
    pub results: Vec<HostResult>,
    pub counts: Counts,
    /// A host result or the run's end could not be written (the run itself completed).
    pub store_failed: bool,
    /// The SHA-256 of the `[run] script` shipped to every host, as the history records it.
    pub script_sha256: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ExecuteError {
    /// The run could not be recorded, so nothing was run.
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the run failed internally: {0}; this is a bug, please report it")]
    Internal(String),
    /// The job's script could not be read: the run is recorded as `error`, nothing ran.
    #[error("run {run_id}: {reason}")]
    Script { run_id: i64, reason: String },
}

/// One run to make.
pub struct Request<'a> {
    pub job: &'a Job,
    pub hosts: Vec<Host>,
    pub store: &'a RunHistory,
    pub connector: Arc<Connector>,
    pub trigger: Trigger,
    /// Send output chunks as events while commands run (the live view); otherwise only results.
    pub live_output: bool,
}

/// Make the run and record it. `watch` sees every runner event with the count of failed hosts so
/// far. A cancelled run still records every host (as cancelled) and its end.
pub async fn run(
    req: Request<'_>,
    mut watch: impl FnMut(&Event, usize),
    cancel: CancellationToken,
) -> Result<Report, ExecuteError> {
    let Request { job, hosts, store, connector, trigger, live_output } = req;
    let started_at = Utc::now();
    let n = hosts.len();
    // The script is read once for the run (off the runtime): every host gets the same bytes, and
    // the record names them by their SHA-256.
    let shipped = match job.run.script.clone() {
        None => Ok(None),
        Some(spec) => match tokio::task::spawn_blocking(move || script::load(&spec)).await {
            Ok(r) => r.map(Some).map_err(|e| e.to_string()),
            Err(e) => return Err(ExecuteError::Internal(e.to_string())),
        },
    };
    let script_sha256 = shipped.as_ref().ok().and_then(|s| s.as_ref()).map(|s| s.sha256.clone());
    let run_id = store
        .start_run(RunStart {
            job: &job.name,
            trigger: trigger.kind,
            hosts_total: n,
            started_at,
            scheduled_for: trigger.scheduled_for,
            script_sha256: script_sha256.as_deref(),
        })
        .await?;
    let shipped = match shipped {
        Ok(s) => s,
        Err(reason) => {
            tracing::error!(job = %job.name, run = run_id, "{reason}");
            let end = RunEnd { outcome: RunOutcome::Error, ok: 0, failed: 0, skipped: 0, reason: Some(&reason) };
            store.finish_run(run_id, end, Utc::now()).await?;
            return Err(ExecuteError::Script { run_id, reason });
        }
    };
    tracing::info!(job = %job.name, run = run_id, hosts = n, trigger = %trigger.kind, "run started");
    // The hosts' spans (and their events) nest under the run's.
    let span = tracing::info_span!("run", job = %job.name, run = run_id);
    let mut store_failed = false;
    let mut results: Vec<Option<HostResult>> = vec![None; n];
    // Why the runner ended without finishing (a panic): the run is still recorded as ended.
    let mut broke: Option<String> = None;
    if n > 0 {
        let plan = Arc::new(Plan {
            concurrency: job.run.max_concurrency.concurrency(n),
            error_budget: job.run.max_errors.error_budget(n),
            hosts,
            commands: job.run.commands.clone(),
            shipped,
            output_limit: job.run.output_limit,
            timeout: job.run.timeout,
            live_output,
        });
        let (tx, mut rx) = mpsc::channel(EVENT_BUFFER);
        let runner = tokio::spawn(runner::run(plan, connector, tx, cancel.clone()).instrument(span));
        let mut failed = 0;
        while let Some(ev) = rx.recv().await {
            if let Event::Finished { result, .. } = &ev {
                failed += (result.status == HostStatus::Failed) as usize;
            }
            watch(&ev, failed);
            if let Event::Finished { seq, result } = ev {
                // Shared with the store's blocking thread, then taken back without a copy.
                let result = Arc::new(*result);
                if let Err(e) = store.record_host(run_id, seq, result.clone()).await {
                    tracing::error!(job = %job.name, run = run_id, "cannot record host {}: {e}", result.host.label());
                    store_failed = true;
                }
                results[seq] = Some(Arc::unwrap_or_clone(result));
            }
        }
        if let Err(e) = runner.await {
            broke = Some(broken(e));
        }
    }
    let results: Vec<HostResult> = results.into_iter().flatten().collect();
    let counts = Counts::of(&results);
    let ended_at = Utc::now();
    let end = run_end(&counts, n - results.len(), broke.as_deref());
    // Recorded even after cancellation: the store call is its own short future, not the cancelled one.
    if let Err(e) = store.finish_run(run_id, end, ended_at).await {
        tracing::error!(job = %job.name, run = run_id, "cannot record the end of the run: {e}");
        store_failed = true;
    }
    if let Some(why) = broke {
        tracing::error!(job = %job.name, run = run_id, "{why}");
        return Err(ExecuteError::Internal(why));
    }
    tracing::info!(
        job = %job.name,
        run = run_id,
        outcome = %counts.outcome(),
        ok = counts.ok,
        failed = counts.failed,
        skipped = counts.skipped,
        cancelled = counts.cancelled,
        seconds = (ended_at - started_at).num_milliseconds() as f64 / 1000.0,
        "run ended"
    );
    Ok(Report { run_id, started_at, ended_at, results, counts, store_failed, script_sha256 })
}

/// What a runner task that did not return says of itself (its panic message).
fn broken(e: tokio::task::JoinError) -> String {
    let what = match e.try_into_panic() {
        Ok(p) => p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".into()),
        Err(e) => e.to_string(),
    };
    format!("internal error: the runner stopped ({what}); hosts without a result were not run to their end; this is a bug, please report it")
}

/// The run's end from its hosts' results; `missing` hosts have none (the runner `broke` before
/// they finished: the run is `error`, with why, and they count as failed).
fn run_end<'a>(counts: &Counts, missing: usize, broke: Option<&'a str>) -> RunEnd<'a> {
    match broke {
        Some(why) => RunEnd {
            outcome: RunOutcome::Error,
            ok: counts.ok,
            failed: counts.failed + counts.cancelled + missing,
            skipped: counts.skipped,
            reason: Some(why),
        },
        None => RunEnd {
            outcome: counts.outcome(),
            ok: counts.ok,
            failed: counts.failed + counts.cancelled,
            skipped: counts.skipped,
            reason: (counts.cancelled > 0).then_some("cancelled: opsd was asked to stop (signal or shutdown grace)"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A runner that panics still ends its run: outcome `error`, the panic in the reason, the hosts
    /// without a result counted failed.
    #[tokio::test]
    async fn a_panicking_runner_still_ends_the_run() {
        let e = tokio::spawn(async { panic!("index out of bounds") }).await.unwrap_err();
        let why = broken(e);
        assert!(why.contains("index out of bounds") && why.contains("please report it"), "{why}");
        let counts = Counts { total: 3, ok: 1, ..Counts::default() };
        let end = run_end(&counts, 2, Some(&why));
        assert_eq!((end.outcome, end.ok, end.failed), (RunOutcome::Error, 1, 2));
        assert_eq!(end.reason, Some(why.as_str()));
        assert_eq!(run_end(&counts, 0, None).outcome, counts.outcome());
    }
}
