//! Fan-out of one job over its hosts: at most `concurrency` hosts at once (a semaphore), each within
//! its deadlines, and an error budget with SSM MaxErrors semantics: once more than `error_budget`
//! hosts have failed, no new host starts; hosts already running finish. Every host ends in exactly one
//! [`Event::Finished`], in completion order.

use super::outcome::{ErrorKind, Host, HostResult, HostStatus};
use crate::ssh::{Connector, NoSink, OutputSink, Script, Stream};
use chrono::Utc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// What a run does, resolved for its hosts.
#[derive(Debug, Clone)]
pub struct Plan {
    pub hosts: Vec<Host>,
    pub commands: Vec<String>,
    /// The job's script, read once for the run and sent to every host.
    pub shipped: Option<super::script::Shipped>,
    pub concurrency: usize,
    pub error_budget: usize,
    pub output_limit: u64,
    pub timeout: Duration,
    /// Send kept output as it arrives (the live view); off for JSON output and the daemon.
    pub live_output: bool,
}

/// Progress of a run, in order per host: `Started`, any `Output`, then `Finished`.
#[derive(Debug)]
pub enum Event {
    Started { seq: usize },
    Output { seq: usize, stream: Stream, data: Vec<u8> },
    Finished { seq: usize, result: Box<HostResult> },
}

struct LiveSink {
    tx: mpsc::Sender<Event>,
    seq: usize,
}

impl OutputSink for LiveSink {
    async fn output(&self, stream: Stream, data: &[u8]) {
        let _ = self.tx.send(Event::Output { seq: self.seq, stream, data: data.to_vec() }).await;
    }
}

/// Run `plan` to the end; returns when every host has finished (or was skipped or cancelled).
pub async fn run(plan: Arc<Plan>, connector: Arc<Connector>, events: mpsc::Sender<Event>, cancel: CancellationToken) {
    let permits = Arc::new(Semaphore::new(plan.concurrency.clamp(1, plan.hosts.len().max(1))));
    let failures = Arc::new(AtomicUsize::new(0));
    let mut tasks = JoinSet::new();
    let mut hosts = plan.hosts.iter().cloned().enumerate();
    while let Some((seq, host)) = hosts.next() {
        let permit = tokio::select! {
            // Cancellation first: after Ctrl-C no new host starts, even if a permit is free.
            biased;
            _ = cancel.cancelled() => {
                let why = "not started: opsd was shutting down";
                for (seq, host) in std::iter::once((seq, host)).chain(hosts.by_ref()) {
                    let _ = events.send(finished(seq, not_run(host, HostStatus::Cancelled, ErrorKind::Cancelled, why))).await;
                }
                break;
            }
            p = permits.clone().acquire_owned() => p.expect("the semaphore is never closed"),
        };
        let failed = failures.load(Ordering::SeqCst);
        if failed > plan.error_budget {
            let why =
                format!("not started: {failed} hosts failed, more than max_errors allows ({})", plan.error_budget);
            for (seq, host) in std::iter::once((seq, host)).chain(hosts.by_ref()) {
                let _ = events.send(finished(seq, not_run(host, HostStatus::Skipped, ErrorKind::Skipped, &why))).await;
            }
            break;
        }
        let (plan, connector, events, failures, cancel) =
            (plan.clone(), connector.clone(), events.clone(), failures.clone(), cancel.clone());
        tasks.spawn(
            async move {
                let _ = events.send(Event::Started { seq }).await;
                // The host runs in its own task, so a panic in it becomes this host's failure, counted
                // against the error budget while this task still holds the permit.
                let spare = host.clone();
                let (p, c, e, k) = (plan.clone(), connector, events.clone(), cancel);
                let work = tokio::spawn(
                    async move {
                        if p.live_output {
                            run_host(&p, &c, host, &LiveSink { tx: e, seq }, &k).await
                        } else {
                            run_host(&p, &c, host, &NoSink, &k).await
                        }
                    }
                    .in_current_span(),
                );
                let result = match work.await {
                    Ok(r) => r,
                    Err(e) => not_run(
                        spare,
                        HostStatus::Failed,
                        ErrorKind::Protocol,
                        &format!("internal error in opsd: {e}; please report it"),
                    ),
                };
                if result.status == HostStatus::Failed {
                    // Counted before the permit is released, so the next start sees it.
                    failures.fetch_add(1, Ordering::SeqCst);
                }
                let _ = events.send(finished(seq, result)).await;
                drop(permit);
            }
            .in_current_span(),
        );
    }
    while tasks.join_next().await.is_some() {}
}

fn finished(seq: usize, result: HostResult) -> Event {
    Event::Finished { seq, result: Box::new(result) }
}

fn not_run(host: Host, status: HostStatus, kind: ErrorKind, why: &str) -> HostResult {
    let now = Utc::now();
    HostResult {
        host,
        started_at: now,
        ended_at: now,
        status,
        error_kind: Some(kind),
        error: Some(why.to_string()),
        exit_status: None,
        commands: Vec::new(),
        stdout_dropped: 0,
        stderr_dropped: 0,
    }
}

async fn run_host<S: OutputSink>(
    plan: &Plan,
    connector: &Connector,
    host: Host,
    sink: &S,
    cancel: &CancellationToken,
) -> HostResult {
    let started_at = Utc::now();
    let Some(address) = host.address.clone() else {
        let mut r = not_run(
            host,
            HostStatus::Failed,
            ErrorKind::NoAddress,
            "the instance has no address of the job's kind; check target.address",
        );
        r.started_at = started_at;
        return r;
    };
    let host_id = host.instance_id.clone().unwrap_or_else(|| address.clone());
    let span = tracing::info_span!("host", host = %host_id, address = %address);
    let shipped = plan.shipped.as_ref().map(|s| crate::ssh::Shipped {
        command: &s.command,
        display: &s.display,
        bytes: &s.bytes,
    });
    let script = Script { commands: &plan.commands, shipped, output_limit: plan.output_limit, timeout: plan.timeout };
    let out = connector.run(&host_id, &address, &script, sink, cancel).instrument(span).await;
    let error = out.error.map(|(failure, msg)| (ErrorKind::from(failure), msg));
    let status = match &error {
        None => HostStatus::Ok,
        Some((ErrorKind::Cancelled, _)) => HostStatus::Cancelled,
        Some(_) => HostStatus::Failed,
    };
    if let Some((kind, msg)) = &error {
        tracing::debug!(host = %host_id, kind = kind.as_str(), "{msg}");
    }
    HostResult {
        host,
        started_at,
        ended_at: Utc::now(),
        status,
        exit_status: out.commands.last().and_then(|c| c.exit_status),
        error_kind: error.as_ref().map(|e| e.0),
        error: error.map(|e| e.1),
        commands: out.commands,
        stdout_dropped: out.stdout_dropped,
        stderr_dropped: out.stderr_dropped,
    }
}
