//! The metrics endpoint and what the wings share for it: one Prometheus registry (prefix `opsd`)
//! that each wing registers its own series in (`jobs::metrics`, `lifecycle::metrics`,
//! `capacity::metrics`), and `GET /metrics` served from it (hyper http1, bounded connections).

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::encoding::text::encode;
pub use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// A series' labels, as every wing writes them.
pub type Labels = Vec<(&'static str, String)>;

/// Connections open at once (a bound on file descriptors and memory); more wait to be accepted.
/// Far more than scrapers ever need: with idle connections closed after [`IDLE_TIMEOUT`], busy
/// keep-alive clients cannot hold every slot and starve a scraper.
const MAX_CONNECTIONS: usize = 256;
/// A client must send its request headers within this time.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection with no request for this long is closed (one that never sends one, too), so idle
/// keep-alive connections cannot hold every slot and starve the scrapers.
const IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// After asking a connection to close, how long it may take to finish a response in flight.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// An empty registry with opsd's prefix, for the wings to register in.
pub fn registry() -> Registry {
    Registry::with_prefix("opsd")
}

/// What `/metrics` serves: the wings' series and opsd's version, registered last.
pub struct Exporter {
    registry: Registry,
}

impl Exporter {
    pub fn new(mut registry: Registry) -> Exporter {
        let info: prometheus_client::metrics::info::Info<Labels> = prometheus_client::metrics::info::Info::new(vec![
            ("version", env!("CARGO_PKG_VERSION").to_string()),
            ("commit", env!("OPSD_COMMIT").to_string()),
        ]);
        registry.register("build", "opsd's version", info);
        Exporter { registry }
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
    metrics: Arc<Exporter>,
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
                let activity = Arc::new(std::sync::Mutex::new(tokio::time::Instant::now()));
                let seen = activity.clone();
                let service = hyper::service::service_fn(move |req| {
                    *seen.lock().unwrap_or_else(|p| p.into_inner()) = tokio::time::Instant::now();
                    let metrics = metrics.clone();
                    async move { Ok::<_, std::convert::Infallible>(respond(&req, &metrics)) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), service);
                tokio::pin!(conn);
                // Close the connection once it has been idle for IDLE_TIMEOUT, or at cancellation.
                let idle = async {
                    loop {
                        let last = *activity.lock().unwrap_or_else(|p| p.into_inner());
                        if last.elapsed() >= IDLE_TIMEOUT {
                            return;
                        }
                        tokio::time::sleep_until(last + IDLE_TIMEOUT).await;
                    }
                };
                tokio::select! {
                    r = conn.as_mut() => {
                        if let Err(e) = r { tracing::debug!("metrics endpoint: {e}") }
                        return;
                    }
                    _ = idle => {}
                    _ = cancel.cancelled() => return,
                }
                conn.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(CLOSE_GRACE, conn.as_mut()).await;
            });
        }
    });
    Ok((local, handle))
}

fn respond(req: &Request<hyper::body::Incoming>, metrics: &Exporter) -> Response<Full<Bytes>> {
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
