//! `opsd daemon`, the composition root: it takes the state directory, opens the store, builds the
//! AWS config and the metrics registry, starts each configured wing (the jobs scheduler always,
//! the lifecycle consumer and the capacity controller when their sections are present) and history
//! retention, speaks sd_notify, reloads on SIGHUP and file changes, and shuts down gracefully.
//!
//! Shutdown (SIGTERM/SIGINT cancels the token from `main`): no new firing starts; firings still in
//! their jitter delay or queue are recorded as skipped; running runs get `shutdown_grace` to finish,
//! then are cancelled (their remote commands are killed) and recorded; the process exits 0.

mod reload;
mod retention;
mod systemd;

use crate::capacity::fence::Fence;
use crate::capacity::{self, controller::Controller, history::DecisionHistory, metrics::CapacityMetrics};
use crate::cluster::{lease::Lease, members, metrics::ClusterMetrics, table::Table, Cluster};
use crate::config::Config;
use crate::exit::Exit;
use crate::jobs::history::RunHistory;
use crate::jobs::metrics::JobMetrics;
use crate::jobs::scheduler::{firing, Scheduler};
use crate::jobs::spec;
use crate::lifecycle::{self, metrics::LifecycleMetrics};
use crate::metrics::{self, Exporter};
use crate::ssh::pins::StorePins;
use crate::store::Store;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// File events closer together than this are one reload (editors write a file in several steps).
const DEBOUNCE: Duration = Duration::from_millis(300);
/// A reload waits at most this long for changes to stop arriving.
const MAX_DEBOUNCE: Duration = Duration::from_secs(2);
/// After the grace period, how long cancelled runs get to kill their commands and record.
const CANCEL_CLEANUP: Duration = Duration::from_secs(30);
/// How long a stop may take after the grace: cancelled runs recording, then the lease's release
/// and the heartbeat's leave (10 s each at most), and a margin. systemd is told grace + this.
const AFTER_GRACE: Duration = Duration::from_secs(60);

pub async fn run(mut config: Config, cancel: CancellationToken) -> Exit {
    // One daemon per state directory: two would fire every job twice.
    let _lock = match lock_state_dir(&config) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("opsd: {e}");
            return Exit::Unavailable;
        }
    };
    let store = match Store::open(&config.state_dir, crate::schema::MIGRATIONS).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("opsd: {e}");
            return Exit::Software;
        }
    };
    let runs = RunHistory::new(store.clone());
    match runs.interrupt_stale().await {
        Ok(0) => {}
        Ok(n) => tracing::warn!("{n} scheduled runs were left running by a previous daemon; recorded as interrupted"),
        Err(e) => tracing::warn!("cannot mark runs left by a previous daemon: {e}"),
    }
    if let Err(e) = runs.interrupt_dead().await {
        tracing::warn!("cannot check for runs left by opsd processes that are gone: {e}");
    }
    let sdk = match crate::aws::load(&config.aws).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("opsd: {e}");
            return Exit::Usage;
        }
    };
    if let Err(d) = spec::files_in(&config.jobs_dir) {
        eprintln!("{d}");
        return Exit::Usage;
    }
    // Cancelled once everything else has stopped: the heartbeat outlives the shutdown grace, so the
    // others never take this replica's running jobs for abandoned.
    let cluster_stop = CancellationToken::new();
    // Every wing registers its series, whether it runs or not, so dashboards see zeros, not gaps.
    let mut registry = metrics::registry();
    let job_metrics = JobMetrics::register(&mut registry);
    let lifecycle_metrics = LifecycleMetrics::register(&mut registry);
    let capacity_metrics = CapacityMetrics::register(&mut registry);
    let cluster_metrics = ClusterMetrics::register(&mut registry);
    let mut heartbeat = None;
    let cluster = match &config.cluster {
        Some(c) => match join_cluster(c, &sdk, cluster_metrics, cluster_stop.clone()).await {
            Ok((cluster, beat)) => {
                heartbeat = Some(beat);
                Some(cluster)
            }
            Err(e) => {
                eprintln!("opsd: {e}");
                return Exit::Unavailable;
            }
        },
        None => None,
    };
    let exporter = Arc::new(Exporter::new(registry));
    let server_stop = CancellationToken::new();
    let metrics_addr = match config.metrics_listen {
        Some(addr) => match metrics::serve(addr, exporter, server_stop.clone()).await {
            Ok((local, _)) => Some(local),
            Err(e) => {
                eprintln!("opsd: {e}");
                return Exit::Unavailable;
            }
        },
        None => None,
    };

    // Cancelled when the shutdown grace has run out: work still going is cancelled.
    let abort = CancellationToken::new();
    let tracker = TaskTracker::new();
    tracker.spawn(retention::run(
        store.clone(),
        config.history_retention.0,
        aws_sdk_ec2::Client::new(&sdk),
        cancel.clone(),
    ));
    // Trusted host keys: this replica's store, shared through the table in a cluster.
    let pins: Arc<dyn crate::ssh::KeyPins> = match &cluster {
        Some(c) => Arc::new(crate::cluster::host_keys::ClusterPins::new(
            Arc::new(StorePins(store.clone())),
            c.table.clone(),
            tokio::runtime::Handle::current(),
        )),
        None => Arc::new(StorePins(store.clone())),
    };
    if let Some(l) = config.lifecycle.clone() {
        let lctx = lifecycle::context(&sdk, &l, store.clone(), pins.clone(), lifecycle_metrics, abort.clone());
        tracker.spawn(lifecycle::run(lctx, l, cancel.clone()));
    }
    let mut campaign = None;
    let controller_done = CancellationToken::new();
    if let Some(c) = config.capacity.clone() {
        let history = DecisionHistory::new(store.clone());
        // In a cluster one replica at a time leads, holding the capacity lease; it is released
        // once the controller has stopped (with the heartbeat), so the next leader need not wait.
        let fence = match (&cluster, &config.cluster) {
            (Some(cl), Some(settings)) => {
                let name = capacity::fence::lease_name(&c.scope());
                let lease = Arc::new(Lease::new(
                    cl.table.clone(),
                    &name,
                    &cl.replica,
                    &cl.incarnation,
                    settings.leader_lease.0,
                ));
                let held = lease.clone();
                let (no_more, stop) = (cancel.clone(), cluster_stop.clone());
                let done = controller_done.clone();
                campaign = Some(tokio::spawn(async move { held.campaign(done, no_more, stop).await }));
                Fence::leased(lease)
            }
            _ => Fence::alone(),
        };
        let clients = capacity::Clients::new(&sdk);
        let controller = Controller::new(c, clients, history, capacity_metrics, fence, cancel.clone());
        // The lease is released once the controller has ended, however it ended (a panic too), and
        // only then: a controller still acting when the daemon gives up keeps it until it runs out.
        let ended = controller_done.clone().drop_guard();
        tracker.spawn(async move {
            let _ended = ended;
            controller.run().await
        });
    }
    let ctx = firing::Context {
        runs,
        cluster: cluster.clone(),
        keep: config.history_retention.0,
        ssh: crate::ssh::Services::with_aws(pins, &sdk),
        ec2: aws_sdk_ec2::Client::new(&sdk),
        page_size: config.aws.page_size,
        metrics: job_metrics,
        stop: cancel.clone(),
        abort: abort.clone(),
    };
    let mut scheduler = Scheduler::new(config.jobs_dir.clone(), config.job_defaults(), ctx, tracker.clone());
    let mut reloads = reload::watch(&config.jobs_dir, cancel.clone());
    scheduler.load().await;
    scheduler.catch_up().await;

    let endpoint = std::env::var("AWS_ENDPOINT_URL_EC2").or_else(|_| std::env::var("AWS_ENDPOINT_URL")).ok();
    let (jobs, scheduled) = scheduler.counts();
    tracing::info!(
        version = crate::VERSION,
        config = %config.source.as_deref().map(|p| p.display().to_string()).unwrap_or_else(|| "(built-in defaults)".into()),
        jobs_dir = %config.jobs_dir.display(),
        state_dir = %config.state_dir.display(),
        jobs,
        scheduled,
        region = sdk.region().map(|r| r.as_ref()).unwrap_or("-"),
        endpoint = endpoint.as_deref().unwrap_or("AWS default"),
        metrics = %metrics_addr.map(|a| format!("http://{a}/metrics")).unwrap_or_else(|| "off".into()),
        lifecycle_queue = config.lifecycle.as_ref().map(|l| l.queue_url.as_str()).unwrap_or("off"),
        capacity = %config.capacity.as_ref().map(|c| c.scope()).unwrap_or_else(|| "off".into()),
        cluster = %cluster.as_ref().map(|c| format!("{} as {}", c.table.name(), c.replica)).unwrap_or_else(|| "off".into()),
        "opsd daemon started"
    );
    systemd::ready(scheduler.status()).await;

    let watchdog = systemd::watchdog_interval();
    let mut watchdog_tick = tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(3600)));
    loop {
        let sleep = scheduler.until_next();
        tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            Some(()) = reloads.signal.recv() => {
                debounce(&mut reloads, &cancel).await;
                systemd::reloading().await;
                config = reload_config(config).await;
                scheduler.set_defaults(config.job_defaults());
                scheduler.load().await;
                systemd::reloaded(scheduler.status()).await;
            }
            Some(()) = reloads.files.recv() => {
                let signal = debounce(&mut reloads, &cancel).await;
                systemd::reloading().await;
                if signal {
                    config = reload_config(config).await;
                    scheduler.set_defaults(config.job_defaults());
                }
                scheduler.load().await;
                systemd::reloaded(scheduler.status()).await;
            }
            _ = watchdog_tick.tick(), if watchdog.is_some() => systemd::watchdog().await,
            _ = tokio::time::sleep(sleep) => {
                scheduler.fire_due();
                if scheduler.wants_reload() {
                    scheduler.load().await;
                }
                if scheduler.counts().0 > 0 {
                    systemd::status(scheduler.status()).await;
                }
            }
        }
    }

    // Shutdown.
    tracker.close();
    let grace = config.shutdown_grace.0;
    tracing::info!(
        "stopping: no new firings; {} in progress get up to {} to finish",
        tracker.len(),
        humantime::format_duration(grace)
    );
    let status = format!("stopping: waiting up to {} for running jobs", humantime::format_duration(grace));
    systemd::stopping(status, grace + AFTER_GRACE).await;
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        tracing::warn!(
            "shutdown_grace of {} is over: cancelling the runs still going (their commands are killed)",
            humantime::format_duration(grace)
        );
        abort.cancel();
        if tokio::time::timeout(CANCEL_CLEANUP, tracker.wait()).await.is_err() {
            tracing::error!(
                "some runs did not finish recording within {CANCEL_CLEANUP:?} of cancellation; exiting anyway"
            );
        }
    }
    server_stop.cancel();
    cluster_stop.cancel();
    if let Some(h) = campaign.take() {
        let _ = tokio::time::timeout(Duration::from_secs(10), h).await;
    }
    if let Some(h) = heartbeat.take() {
        let _ = tokio::time::timeout(Duration::from_secs(10), h).await;
    }
    tracing::info!("opsd daemon stopped");
    Exit::Ok
}

/// Let a burst of changes settle: wait until nothing has arrived for [`DEBOUNCE`], but at most
/// [`MAX_DEBOUNCE`] in all (a file rewritten in a loop must not stall firing and the watchdog).
/// Returns whether a SIGHUP came in meanwhile.
async fn debounce(reloads: &mut reload::Requests, cancel: &CancellationToken) -> bool {
    let end = tokio::time::Instant::now() + MAX_DEBOUNCE;
    let mut signal = false;
    loop {
        let quiet = tokio::time::sleep(DEBOUNCE);
        tokio::select! {
            _ = quiet => return signal,
            _ = tokio::time::sleep_until(end) => return signal,
            _ = cancel.cancelled() => return signal,
            Some(()) = reloads.signal.recv() => signal = true,
            Some(()) = reloads.files.recv() => {}
        }
    }
}

/// The config read again at SIGHUP (on a blocking thread: file I/O). Only what the jobs resolve
/// against takes effect now; every other key is fixed for the process's life (a warning says so),
/// and a bad config keeps the old.
async fn reload_config(old: Config) -> Config {
    let source = old.source.clone();
    let loaded = tokio::task::spawn_blocking(move || Config::load(source.as_deref())).await;
    let loaded = match loaded {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("reading the config failed internally ({e}); keeping the old one");
            return old;
        }
    };
    match loaded {
        Ok(new) => {
            let fixed = [
                ("state_dir", old.state_dir != new.state_dir),
                ("jobs_dir", old.jobs_dir != new.jobs_dir),
                ("metrics_listen", old.metrics_listen != new.metrics_listen),
                ("log_format", old.log_format != new.log_format),
                ("history_retention", old.history_retention != new.history_retention),
                ("aws", old.aws != new.aws),
                ("[lifecycle]", old.lifecycle != new.lifecycle),
                ("[capacity]", old.capacity != new.capacity),
                ("[cluster]", old.cluster != new.cluster),
            ];
            for (key, changed) in fixed {
                if changed {
                    tracing::warn!("{key} changed in the config; it takes effect at the next restart");
                }
            }
            Config {
                state_dir: old.state_dir,
                jobs_dir: old.jobs_dir,
                metrics_listen: old.metrics_listen,
                log_format: old.log_format,
                history_retention: old.history_retention,
                aws: old.aws,
                lifecycle: old.lifecycle,
                capacity: old.capacity,
                cluster: old.cluster,
                ..new
            }
        }
        Err(diags) => {
            for d in diags {
                tracing::error!("{d}");
            }
            tracing::error!("the config is invalid; keeping the previous one");
            old
        }
    }
}

/// Join the cluster: the table must exist (else the error names the command that creates it) and
/// no live daemon may use this replica's name; the heartbeat then runs until `stop`.
async fn join_cluster(
    settings: &crate::cluster::ClusterSettings,
    sdk: &aws_config::SdkConfig,
    metrics: ClusterMetrics,
    stop: CancellationToken,
) -> Result<(Cluster, tokio::task::JoinHandle<()>), members::JoinError> {
    let table = Table::new(sdk, &settings.table).with_metrics(metrics);
    let me = members::Me {
        replica: settings.replica(),
        incarnation: crate::cluster::incarnation(),
        host: crate::cluster::settings::host_name(),
        started_at: chrono::Utc::now(),
    };
    let every = settings.heartbeat_interval.0;
    members::join(&table, &me, every).await?;
    let liveness = Arc::new(members::Liveness::new(settings.member_timeout.0));
    let cluster = Cluster::new(table.clone(), &me, liveness.clone(), every);
    let beat = tokio::spawn(members::heartbeat(table, me, every, liveness, cluster.beaten.clone(), stop));
    Ok((cluster, beat))
}

#[derive(Debug, thiserror::Error)]
enum LockError {
    #[error("cannot open {path}: {source}; check that state_dir exists and is writable by opsd")]
    Open { path: std::path::PathBuf, source: std::io::Error },
    #[error("another opsd daemon uses the state directory {dir} (it holds {path}); stop it, or give this one another state_dir")]
    Held { dir: std::path::PathBuf, path: std::path::PathBuf },
}

/// Hold an exclusive lock on `<state_dir>/daemon.lock` for the daemon's life.
fn lock_state_dir(config: &Config) -> Result<std::fs::File, LockError> {
    let dir = &config.state_dir;
    let path = dir.join("daemon.lock");
    crate::store::private_dir(dir).map_err(|source| LockError::Open { path: path.clone(), source })?;
    let f =
        crate::store::private_options().open(&path).map_err(|source| LockError::Open { path: path.clone(), source })?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => Err(LockError::Held { dir: dir.clone(), path }),
        Err(std::fs::TryLockError::Error(source)) => Err(LockError::Open { path, source }),
    }
}
