//! `pin_host_keys`: while a launching instance waits in Pending:Wait, its host keys are read from its
//! console output (cloud-init's block, which only the account can read) and pinned in the store, so a
//! job's first connection to it is verified (`host_keys = "pinned"`). cloud-init prints the block some
//! time after boot: the console is read again, with backoff, until it appears or `pin_timeout` ends
//! (the action's heartbeats keep the hook alive meanwhile).

use super::action::ActionError;
use super::eni::EniError;
use crate::backoff::Backoff;
use crate::ssh::console::{ConsoleKeys, NO_BLOCK_HELP};
use crate::ssh::fingerprint;
use crate::ssh::pins::KeySource;
use crate::ssh::KeyPins;
use russh::keys::ssh_key::PublicKey;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Console reads start this far apart and slow down to the second.
const FIRST_WAIT: Duration = Duration::from_secs(2);
const MAX_WAIT: Duration = Duration::from_secs(15);

/// Where a launching instance's keys are read and pinned.
pub struct Pinning {
    pub pins: Arc<dyn KeyPins>,
    pub console: Arc<dyn ConsoleKeys>,
    pub timeout: Duration,
}

impl Pinning {
    /// Read the instance's host keys from its console and pin them (source `lifecycle`). Keys
    /// pinned before (a redelivery, a launch from a warm pool) stand, and the console is not read.
    /// `abort` ends the wait (shutdown, or the interface work failed for good).
    pub async fn pin(&self, instance_id: &str, abort: &CancellationToken) -> Result<(), ActionError> {
        // cloud-init prints the block at first boot only: an instance back from a warm pool, or a
        // redelivered action, shows none now, and its keys were pinned then.
        let (pins, id) = (self.pins.clone(), instance_id.to_string());
        let pinned = tokio::task::spawn_blocking(move || pins.instance_keys(&id, Some(KeySource::Lifecycle)))
            .await
            .unwrap_or_else(|e| Err(e.to_string()))
            .map_err(|e| ActionError::HostKeys(format!("cannot read the pinned host keys of {instance_id}: {e}")))?;
        if !pinned.is_empty() {
            tracing::info!(instance = %instance_id, "host keys pinned at an earlier launch stand");
            return Ok(());
        }
        let start = Instant::now();
        let mut wait = Backoff::new(FIRST_WAIT, MAX_WAIT);
        loop {
            let read = tokio::select! {
                r = self.console.host_keys(instance_id) => r,
                _ = abort.cancelled() => return Err(EniError::Cancelled.into()),
            };
            let last = match read {
                Ok(Some(keys)) => return self.record(instance_id, keys).await,
                Ok(None) => "no host key block yet".to_string(),
                // NotFound (a new id), throttling, a server error: read again.
                Err(e) => e,
            };
            let pause = wait.fail();
            if start.elapsed() + pause >= self.timeout {
                return Err(ActionError::HostKeys(format!(
                    "the console output of {instance_id} showed no SSH host keys within pin_timeout ({}; last: {last}); {NO_BLOCK_HELP}; raise [lifecycle] pin_timeout, or set pin_host_keys = false",
                    humantime::format_duration(self.timeout)
                )));
            }
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = abort.cancelled() => return Err(EniError::Cancelled.into()),
            }
        }
    }

    async fn record(&self, instance_id: &str, keys: Vec<String>) -> Result<(), ActionError> {
        let (pins, id) = (self.pins.clone(), instance_id.to_string());
        let pinned = tokio::task::spawn_blocking(move || pins.record_instance_keys(&id, &keys, KeySource::Lifecycle))
            .await
            .unwrap_or_else(|e| Err(e.to_string()))
            .map_err(|e| ActionError::HostKeys(format!("cannot pin the host keys of {instance_id}: {e}")))?;
        let prints: Vec<String> =
            pinned.iter().filter_map(|k| PublicKey::from_openssh(k).ok()).map(|k| fingerprint(&k)).collect();
        tracing::info!(instance = %instance_id, "pinned host keys {} from the console output", prints.join(", "));
        Ok(())
    }
}
