//! What asks the daemon to reload: SIGHUP (config and jobs) and changes in the jobs directory
//! (notify crate, inotify on Linux). Both feed one small channel; the daemon debounces it.

use std::path::Path;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Reload requests, one channel per cause so that file events can never crowd out a SIGHUP. Each
/// holds one pending request: more of the same while one is pending are the same reload.
pub struct Requests {
    /// SIGHUP: re-read the config, then the jobs.
    pub signal: mpsc::Receiver<()>,
    /// A file in the jobs directory changed.
    pub files: mpsc::Receiver<()>,
    /// Dropping the watcher stops the watching.
    _watcher: Option<notify::RecommendedWatcher>,
}

/// Start both sources.
pub fn watch(jobs_dir: &Path, cancel: CancellationToken) -> Requests {
    let (hup, signal) = mpsc::channel(1);
    let (tx, files) = mpsc::channel(1);
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let mut s = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("cannot handle SIGHUP ({e}); job files are still reloaded when they change");
                return;
            }
        };
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                r = s.recv() => if r.is_none() { return },
            }
            tracing::info!("SIGHUP: reloading the config and the jobs");
            // Full means a SIGHUP reload is already pending.
            let _ = hup.try_send(());
        }
    });
    let watcher = match start_watcher(jobs_dir, tx) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(
                "cannot watch {} for changes ({e}); send SIGHUP (systemctl reload opsd) after editing jobs",
                jobs_dir.display()
            );
            None
        }
    };
    Requests { signal, files, _watcher: watcher }
}

fn start_watcher(dir: &Path, tx: mpsc::Sender<()>) -> notify::Result<notify::RecommendedWatcher> {
    use notify::{EventKind, RecursiveMode, Watcher};
    let mut w = notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
        Ok(ev) => {
            let relevant = !matches!(ev.kind, EventKind::Access(_))
                && ev.paths.iter().any(|p| p.extension().is_some_and(|x| x == "toml"));
            if relevant {
                // Full means a reload is already pending: this change will be part of it.
                let _ = tx.try_send(());
            }
        }
        Err(e) => tracing::warn!("watching the jobs directory: {e}"),
    })?;
    w.watch(dir, RecursiveMode::NonRecursive)?;
    Ok(w)
}
