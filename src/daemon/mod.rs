//! `opsd daemon`: fires every job of the jobs directory on its schedule, reloads on SIGHUP and on
//! file changes, speaks sd_notify, serves metrics, and stops gracefully.
//!
//! Shutdown (SIGTERM/SIGINT cancels the token from `main`): no new firing starts; firings still in
//! their jitter delay or queue are recorded as skipped; running runs get `shutdown_grace` to finish,
//! then are cancelled (their remote commands are killed) and recorded; the process exits 0.

mod firing;
mod reload;
mod retention;
mod systemd;
mod table;

use crate::config::Config;
use crate::exit::Exit;
use crate::job::{self, calendar};
use crate::metrics::{self, Metrics};
use crate::store::Store;
use chrono::{DateTime, Utc};
use firing::{Context, Firing};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use table::{Changes, Loaded, Table};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// File events closer together than this are one reload (editors write a file in several steps).
const DEBOUNCE: Duration = Duration::from_millis(300);
/// A reload waits at most this long for changes to stop arriving.
const MAX_DEBOUNCE: Duration = Duration::from_secs(2);
/// The scheduler wakes at least this often, so a wall-clock jump (NTP, suspend) is seen promptly.
const MAX_SLEEP: Duration = Duration::from_secs(30);
/// After the grace period, how long cancelled runs get to kill their commands and record.
const CANCEL_CLEANUP: Duration = Duration::from_secs(30);

pub async fn run(mut config: Config, cancel: CancellationToken) -> Exit {
    // One daemon per state directory: two would fire every job twice.
    let _lock = match lock_state_dir(&config) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("opsd: {e}");
            return Exit::Unavailable;
        }
    };
    let store = match Store::open(&config.state_dir).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("opsd: {e}");
            return Exit::Software;
        }
    };
    match store.interrupt_stale().await {
        Ok(0) => {}
        Ok(n) => tracing::warn!("{n} scheduled runs were left running by a previous daemon; recorded as interrupted"),
        Err(e) => tracing::warn!("cannot mark runs left by a previous daemon: {e}"),
    }
    let sdk = match crate::aws::load(&config.aws).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("opsd: {e}");
            return Exit::Usage;
        }
    };
    if let Err(d) = job::files_in(&config.jobs_dir) {
        eprintln!("{d}");
        return Exit::Usage;
    }
    let metrics = Arc::new(Metrics::new());
    let server_stop = CancellationToken::new();
    let metrics_addr = match config.metrics_listen {
        Some(addr) => match metrics::serve(addr, metrics.clone(), server_stop.clone()).await {
            Ok((local, _)) => Some(local),
            Err(e) => {
                eprintln!("opsd: {e}");
                return Exit::Unavailable;
            }
        },
        None => None,
    };
    let ctx = Arc::new(Context {
        store,
        ec2: aws_sdk_ec2::Client::new(&sdk),
        page_size: config.aws.page_size,
        metrics: metrics.clone(),
        stop: cancel.clone(),
        abort: CancellationToken::new(),
    });
    let tracker = TaskTracker::new();
    tracker.spawn(retention::run(ctx.store.clone(), config.history_retention.0, cancel.clone()));
    if let Some(l) = config.lifecycle.clone() {
        let lctx = crate::lifecycle::context(&sdk, &l, ctx.store.clone(), metrics.clone(), ctx.abort.clone());
        tracker.spawn(crate::lifecycle::run(lctx, l, cancel.clone()));
    }
    if let Some(c) = config.capacity.clone() {
        let clients = crate::capacity::clients(&sdk);
        tracker.spawn(crate::capacity::run(c, clients, ctx.store.clone(), metrics.clone(), cancel.clone()));
    }
    let mut table = Table::default();
    let mut reloads = reload::watch(&config.jobs_dir, cancel.clone());
    load(&mut table, &config, &ctx).await;
    catch_up(&table, &ctx, &tracker).await;

    let endpoint = std::env::var("AWS_ENDPOINT_URL_EC2").or_else(|_| std::env::var("AWS_ENDPOINT_URL")).ok();
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        config = %config.source.as_deref().map(|p| p.display().to_string()).unwrap_or_else(|| "(built-in defaults)".into()),
        jobs_dir = %config.jobs_dir.display(),
        state_dir = %config.state_dir.display(),
        jobs = table.entries.len(),
        scheduled = table.scheduled(),
        region = sdk.region().map(|r| r.as_ref()).unwrap_or("-"),
        endpoint = endpoint.as_deref().unwrap_or("AWS default"),
        metrics = %metrics_addr.map(|a| format!("http://{a}/metrics")).unwrap_or_else(|| "off".into()),
        lifecycle_queue = config.lifecycle.as_ref().map(|l| l.queue_url.as_str()).unwrap_or("off"),
        capacity = %config.capacity.as_ref().map(|c| format!("{} on {}", c.cluster, c.target())).unwrap_or_else(|| "off".into()),
        "opsd daemon started"
    );
    systemd::ready(status(&table)).await;

    let watchdog = systemd::watchdog_interval();
    let mut watchdog_tick = tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(3600)));
    loop {
        let now = Utc::now();
        let sleep = table
            .next_firing()
            .map(|(_, t)| (t - now).to_std().unwrap_or(Duration::ZERO))
            .unwrap_or(MAX_SLEEP)
            .min(MAX_SLEEP);
        tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            Some(()) = reloads.signal.recv() => {
                debounce(&mut reloads, &cancel).await;
                systemd::reloading().await;
                config = reload_config(config);
                load(&mut table, &config, &ctx).await;
                systemd::reloaded(status(&table)).await;
            }
            Some(()) = reloads.files.recv() => {
                let signal = debounce(&mut reloads, &cancel).await;
                systemd::reloading().await;
                if signal {
                    config = reload_config(config);
                }
                load(&mut table, &config, &ctx).await;
                systemd::reloaded(status(&table)).await;
            }
            _ = watchdog_tick.tick(), if watchdog.is_some() => systemd::watchdog().await,
            _ = tokio::time::sleep(sleep) => {
                let due = table.take_due(Utc::now());
                for (job, slot, at) in due {
                    tracing::info!(job = %job.name, firing = %at, "firing");
                    tracker.spawn(firing::fire(ctx.clone(), Firing { job, slot, at, kind: "schedule" }));
                }
                if !table.entries.is_empty() {
                    systemd::status(status(&table)).await;
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
    systemd::stopping(format!("stopping: waiting up to {} for running jobs", humantime::format_duration(grace))).await;
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        tracing::warn!(
            "shutdown_grace of {} is over: cancelling the runs still going (their commands are killed)",
            humantime::format_duration(grace)
        );
        ctx.abort.cancel();
        if tokio::time::timeout(CANCEL_CLEANUP, tracker.wait()).await.is_err() {
            tracing::error!(
                "some runs did not finish recording within {CANCEL_CLEANUP:?} of cancellation; exiting anyway"
            );
        }
    }
    server_stop.cancel();
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

/// Read every job file and apply them to the table.
async fn load(table: &mut Table, config: &Config, ctx: &Context) {
    let files = match job::files_in(&config.jobs_dir) {
        Ok(f) => f,
        Err(d) => {
            tracing::error!("{d}; keeping the {} jobs already loaded", table.entries.len());
            return;
        }
    };
    let config2 = config.clone();
    // File reads and parsing off the runtime: a jobs directory on a slow disk must not stall firing.
    let loaded = tokio::task::spawn_blocking(move || {
        files
            .into_iter()
            .map(|f| match job::load(&f, &config2) {
                Ok(j) => Loaded::Good(Box::new(j)),
                Err(diags) => {
                    let name = f.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
                    Loaded::Bad { name, diags }
                }
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap_or_default();
    for l in &loaded {
        if let Loaded::Bad { name, diags } = l {
            ctx.metrics.job_file_error(name);
            for d in diags {
                tracing::error!(job = %name, "{d}");
            }
        }
    }
    // Rate schedules keep their phase across restarts: they count from the last recorded firing.
    let mut last: HashMap<String, DateTime<Utc>> = HashMap::new();
    for l in &loaded {
        if let Loaded::Good(j) = l {
            if !table.entries.contains_key(&j.name) {
                if let Ok(Some(t)) = ctx.store.last_firing(&j.name).await {
                    last.insert(j.name.clone(), t);
                }
            }
        }
    }
    let changes = table.apply(loaded, Utc::now(), &|name| last.get(name).copied());
    log_changes(&changes);
    ctx.metrics.set_jobs_loaded(table.entries.len());
}

fn log_changes(c: &Changes) {
    for (what, names) in [("added", &c.added), ("changed", &c.changed), ("removed", &c.removed)] {
        if !names.is_empty() {
            tracing::info!("jobs {what}: {}", names.join(", "));
        }
    }
    if !c.kept.is_empty() {
        tracing::warn!("invalid job files, their last good version stays scheduled: {}", c.kept.join(", "));
    }
    if !c.rejected.is_empty() {
        tracing::warn!(
            "invalid job files, not scheduled (fix them; `opsd validate` shows why): {}",
            c.rejected.join(", ")
        );
    }
}

/// Jobs with `catch_up = true` whose last recorded firing was followed by a missed one run once now.
async fn catch_up(table: &Table, ctx: &Arc<Context>, tracker: &TaskTracker) {
    let now = Utc::now();
    for e in table.entries.values() {
        let Some(t) = e.job.timing.as_ref().filter(|t| t.catch_up) else { continue };
        let last = match ctx.store.last_run_firing(&e.job.name).await {
            Ok(Some(l)) => l,
            Ok(None) => continue,
            Err(err) => {
                tracing::warn!(job = %e.job.name, "catch_up: cannot read the last firing: {err}");
                continue;
            }
        };
        if let Some(missed) = calendar::latest_missed(&t.schedule, last, now, t.timezone, e.anchor) {
            tracing::info!(job = %e.job.name, last = %last, missed = %missed, "catch_up: a firing was missed while opsd was down; running once now");
            let f = Firing { job: e.job.clone(), slot: e.slot.clone(), at: missed, kind: "catch-up" };
            tracker.spawn(firing::fire(ctx.clone(), f));
        }
    }
}

fn reload_config(old: Config) -> Config {
    match Config::load(old.source.as_deref()) {
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

fn status(table: &Table) -> String {
    let n = table.entries.len();
    match table.next_firing() {
        Some((job, at)) => format!("{n} jobs, {} scheduled; next: {job} at {}", table.scheduled(), at.to_rfc3339()),
        None => format!("{n} jobs, none scheduled"),
    }
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
    std::fs::create_dir_all(dir).map_err(|source| LockError::Open { path: path.clone(), source })?;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| LockError::Open { path: path.clone(), source })?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => Err(LockError::Held { dir: dir.clone(), path }),
        Err(std::fs::TryLockError::Error(source)) => Err(LockError::Open { path, source }),
    }
}
