//! The daemon's Prometheus metrics (prometheus-client) and their `GET /metrics` endpoint (hyper).
//! Off unless `metrics_listen` is set.

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

type Labels = Vec<(&'static str, String)>;

/// Scrapers served at once; more wait for a slot (a scrape takes microseconds).
const MAX_CONNECTIONS: usize = 16;
/// A client must send its request headers within this time.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

fn run_buckets() -> Histogram {
    // 0.5 s .. ~68 min: a one-host job to a long fleet-wide maintenance.
    Histogram::new(exponential_buckets(0.5, 2.0, 14))
}

/// Every series opsd exports.
pub struct Metrics {
    registry: Registry,
    runs: Family<Labels, Counter>,
    hosts: Family<Labels, Counter>,
    run_duration: Family<Labels, Histogram, fn() -> Histogram>,
    skipped: Family<Labels, Counter>,
    job_file_errors: Family<Labels, Counter>,
    last_success: Family<Labels, Gauge<f64, AtomicU64>>,
    jobs_loaded: Gauge,
    lifecycle_messages: Family<Labels, Counter>,
    lifecycle_duration: Family<Labels, Histogram, fn() -> Histogram>,
    lifecycle_heartbeats: Counter,
    lifecycle_enis: Family<Labels, Counter>,
    capacity_reservation: Gauge<f64, AtomicU64>,
    capacity_unplaced: Gauge,
    capacity_target: Gauge<f64, AtomicU64>,
    capacity_fulfilled: Gauge<f64, AtomicU64>,
    capacity_decisions: Family<Labels, Counter>,
}

fn action_buckets() -> Histogram {
    // 0.1 s .. ~55 min: an attach takes seconds; a slow interface can take minutes.
    Histogram::new(exponential_buckets(0.1, 2.0, 16))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("opsd");
        let m = Metrics {
            runs: Family::default(),
            hosts: Family::default(),
            run_duration: Family::new_with_constructor(run_buckets),
            skipped: Family::default(),
            job_file_errors: Family::default(),
            last_success: Family::default(),
            jobs_loaded: Gauge::default(),
            lifecycle_messages: Family::default(),
            lifecycle_duration: Family::new_with_constructor(action_buckets),
            lifecycle_heartbeats: Counter::default(),
            lifecycle_enis: Family::default(),
            capacity_reservation: Gauge::default(),
            capacity_unplaced: Gauge::default(),
            capacity_target: Gauge::default(),
            capacity_fulfilled: Gauge::default(),
            capacity_decisions: Family::default(),
            registry: Registry::default(),
        };
        registry.register("runs", "Runs by job and outcome", m.runs.clone());
        registry.register("hosts", "Host results by job and status", m.hosts.clone());
        registry.register("run_duration_seconds", "Run duration by job", m.run_duration.clone());
        registry.register(
            "firings_skipped",
            "Scheduled firings that started no run, by job and reason",
            m.skipped.clone(),
        );
        registry.register(
            "job_file_errors",
            "Job files that failed validation at load or reload",
            m.job_file_errors.clone(),
        );
        registry.register(
            "last_success_timestamp_seconds",
            "When each job's last successful run ended (Unix time)",
            m.last_success.clone(),
        );
        registry.register("jobs_loaded", "Jobs currently scheduled or runnable", m.jobs_loaded.clone());
        registry.register(
            "lifecycle_messages",
            "Lifecycle queue messages by kind (launch, terminate, test, malformed) and outcome",
            m.lifecycle_messages.clone(),
        );
        registry.register(
            "lifecycle_action_duration_seconds",
            "From receipt to completion of a lifecycle action, by kind",
            m.lifecycle_duration.clone(),
        );
        registry.register(
            "lifecycle_heartbeats",
            "RecordLifecycleActionHeartbeat calls that succeeded",
            m.lifecycle_heartbeats.clone(),
        );
        registry.register(
            "lifecycle_enis",
            "Interfaces opsd created, deleted (termination, failed launch) and swept (orphans)",
            m.lifecycle_enis.clone(),
        );
        registry.register(
            "capacity_reservation_percent",
            "The cluster's reservation: the larger of CPU and memory, percent",
            m.capacity_reservation.clone(),
        );
        registry.register(
            "capacity_unplaced_tasks",
            "Tasks that have no room in the cluster",
            m.capacity_unplaced.clone(),
        );
        registry.register("capacity_target_units", "The fleet's target capacity", m.capacity_target.clone());
        registry.register("capacity_fulfilled_units", "The fleet's fulfilled capacity", m.capacity_fulfilled.clone());
        registry.register(
            "capacity_decisions",
            "Capacity decisions by action (hold, scale_out, scale_in) and outcome",
            m.capacity_decisions.clone(),
        );
        let info: prometheus_client::metrics::info::Info<Labels> =
            prometheus_client::metrics::info::Info::new(vec![("version", env!("CARGO_PKG_VERSION").to_string())]);
        registry.register("build", "opsd's version", info);
        Metrics { registry, ..m }
    }

    /// A run ended: its outcome, its hosts' statuses, its duration.
    pub fn run_ended(&self, job: &str, outcome: &str, hosts: &[(&'static str, usize)], seconds: f64, end_unix: f64) {
        self.runs.get_or_create(&vec![("job", job.to_string()), ("outcome", outcome.to_string())]).inc();
        for (status, n) in hosts {
            if *n > 0 {
                self.hosts
                    .get_or_create(&vec![("job", job.to_string()), ("status", status.to_string())])
                    .inc_by(*n as u64);
            }
        }
        self.run_duration.get_or_create(&vec![("job", job.to_string())]).observe(seconds);
        if outcome == "succeeded" {
            self.last_success.get_or_create(&vec![("job", job.to_string())]).set(end_unix);
        }
    }

    /// A firing started no run; `reason` is a short category (`overlap`, `queue_full`, `shutdown`, `error`).
    pub fn firing_skipped(&self, job: &str, reason: &'static str) {
        self.skipped.get_or_create(&vec![("job", job.to_string()), ("reason", reason.to_string())]).inc();
    }

    pub fn job_file_error(&self, job: &str) {
        self.job_file_errors.get_or_create(&vec![("job", job.to_string())]).inc();
    }

    pub fn lifecycle_message(&self, kind: &str, outcome: &str) {
        self.lifecycle_messages
            .get_or_create(&vec![("kind", kind.to_string()), ("outcome", outcome.to_string())])
            .inc();
    }

    pub fn lifecycle_action_duration(&self, kind: &str, seconds: f64) {
        self.lifecycle_duration.get_or_create(&vec![("kind", kind.to_string())]).observe(seconds);
    }

    pub fn lifecycle_heartbeat(&self) {
        self.lifecycle_heartbeats.inc();
    }

    /// `op`: `created`, `deleted` or `swept`.
    pub fn lifecycle_eni(&self, op: &str) {
        self.lifecycle_enis.get_or_create(&vec![("op", op.to_string())]).inc();
    }

    pub fn capacity_observed(&self, reservation: f64, unplaced: usize, target: f64, fulfilled: f64) {
        self.capacity_reservation.set(reservation);
        self.capacity_unplaced.set(unplaced as i64);
        self.capacity_target.set(target);
        self.capacity_fulfilled.set(fulfilled);
    }

    pub fn capacity_decision(&self, action: &str, outcome: &str) {
        self.capacity_decisions
            .get_or_create(&vec![("action", action.to_string()), ("outcome", outcome.to_string())])
            .inc();
    }

    pub fn set_jobs_loaded(&self, n: usize) {
        self.jobs_loaded.set(n as i64);
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

#[derive(Debug, thiserror::Error)]
#[error("cannot listen on metrics_listen {addr}: {source}; choose a free address or remove metrics_listen")]
pub struct ListenError {
    addr: SocketAddr,
    source: std::io::Error,
}

/// Bind `addr` now (so a taken port fails the start), then serve `GET /metrics` until `cancel`.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), ListenError> {
    let listener = TcpListener::bind(addr).await.map_err(|source| ListenError { addr, source })?;
    let local = listener.local_addr().map_err(|source| ListenError { addr, source })?;
    let handle = tokio::spawn(async move {
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        loop {
            let permit = tokio::select! {
                _ = cancel.cancelled() => return,
                p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            };
            let stream = tokio::select! {
                _ = cancel.cancelled() => return,
                a = listener.accept() => match a {
                    Ok((s, _)) => s,
                    Err(e) => {
                        tracing::warn!("metrics endpoint: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let (metrics, cancel) = (metrics.clone(), cancel.clone());
            tokio::spawn(async move {
                let _permit = permit;
                let service = hyper::service::service_fn(move |req| {
                    let metrics = metrics.clone();
                    async move { Ok::<_, std::convert::Infallible>(respond(&req, &metrics)) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), service);
                tokio::pin!(conn);
                tokio::select! {
                    r = conn.as_mut() => if let Err(e) = r { tracing::debug!("metrics endpoint: {e}") },
                    _ = cancel.cancelled() => {}
                }
            });
        }
    });
    Ok((local, handle))
}

fn respond(req: &Request<hyper::body::Incoming>, metrics: &Metrics) -> Response<Full<Bytes>> {
    let reply = |status, ctype: &str, body: String| {
        Response::builder()
            .status(status)
            .header("content-type", ctype)
            .body(Full::new(Bytes::from(body)))
            .unwrap_or_default()
    };
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => {
            reply(StatusCode::OK, "application/openmetrics-text; version=1.0.0; charset=utf-8", metrics.encode())
        }
        (&Method::GET, "/") => reply(StatusCode::OK, "text/plain", "opsd: metrics at /metrics\n".into()),
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found; GET /metrics\n".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_carry_their_labels_and_values() {
        let m = Metrics::new();
        m.run_ended("backup", "succeeded", &[("ok", 3), ("failed", 0)], 1.5, 1_700_000_000.0);
        m.run_ended("backup", "failed", &[("ok", 1), ("failed", 2)], 0.7, 1_700_000_100.0);
        m.firing_skipped("backup", "overlap");
        m.job_file_error("broken");
        m.set_jobs_loaded(2);
        let text = m.encode();
        for want in [
            "opsd_runs_total{job=\"backup\",outcome=\"succeeded\"} 1",
            "opsd_runs_total{job=\"backup\",outcome=\"failed\"} 1",
            "opsd_hosts_total{job=\"backup\",status=\"ok\"} 4",
            "opsd_hosts_total{job=\"backup\",status=\"failed\"} 2",
            "opsd_run_duration_seconds_count{job=\"backup\"} 2",
            "opsd_firings_skipped_total{job=\"backup\",reason=\"overlap\"} 1",
            "opsd_job_file_errors_total{job=\"broken\"} 1",
            "opsd_last_success_timestamp_seconds{job=\"backup\"} 1700000000.0",
            "opsd_jobs_loaded 2",
        ] {
            assert!(text.contains(want), "missing {want} in\n{text}");
        }
    }
}
