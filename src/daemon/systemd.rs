//! The sd_notify protocol (sd-notify crate): READY=1, STATUS=, WATCHDOG=1, STOPPING=1 over
//! `NOTIFY_SOCKET`. Without that variable (not under systemd) every call does nothing.

use sd_notify::NotifyState;
use std::time::Duration;

/// Send on a blocking thread: a datagram to a full socket buffer would block the runtime.
async fn send(build: impl FnOnce() -> std::io::Result<()> + Send + 'static) {
    match tokio::task::spawn_blocking(build).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!("sd_notify: {e}; systemd may not see opsd's state"),
        Err(e) => tracing::warn!("sd_notify: {e}"),
    }
}

pub async fn ready(status: String) {
    send(move || sd_notify::notify(&[NotifyState::Ready, NotifyState::Status(&status)])).await
}

pub async fn status(status: String) {
    send(move || sd_notify::notify(&[NotifyState::Status(&status)])).await
}

pub async fn reloading() {
    send(|| {
        let now = sd_notify::NotifyState::monotonic_usec_now()?;
        sd_notify::notify(&[NotifyState::Reloading, now])
    })
    .await
}

pub async fn reloaded(status: String) {
    send(move || sd_notify::notify(&[NotifyState::Ready, NotifyState::Status(&status)])).await
}

/// STOPPING=1, and EXTEND_TIMEOUT_USEC so systemd's stop timeout covers `within` (the grace plus
/// what follows it) whatever the unit's TimeoutStopSec says: the stop timeout follows the grace.
pub async fn stopping(status: String, within: Duration) {
    let usec = u32::try_from(within.as_micros()).unwrap_or(u32::MAX);
    send(move || {
        sd_notify::notify(&[NotifyState::Stopping, NotifyState::Status(&status), NotifyState::ExtendTimeoutUsec(usec)])
    })
    .await
}

pub async fn watchdog() {
    send(|| sd_notify::notify(&[NotifyState::Watchdog])).await
}

/// How often to send WATCHDOG=1: half of `WatchdogSec=` (systemd's advice), when it is set for us.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|d| d / 2).filter(|d| !d.is_zero())
}
