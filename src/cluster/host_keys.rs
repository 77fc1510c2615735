//! Host keys the cluster shares. With `[cluster]`, the keys an instance's console showed (read by a
//! run with `host_keys = "console"`, or pinned by the lifecycle action on whichever replica worked
//! the launch) go to the table, so every replica verifies against the same keys, and the first set
//! written for an instance and source stands cluster-wide. Each replica's store keeps a copy (and
//! TOFU pins stay per replica). Item: `pk` = `hostkeys#<instance>`, `sk` = the source, `keys` one
//! per line; no expiry (an instance can run for years).

use super::table::{get_s, s, Table, Written, PK, SK};
use crate::ssh::pins::KeySource;
use crate::ssh::KeyPins;
use std::sync::Arc;
use std::time::Duration;

/// Each table call of a key lookup: well inside a host's connect_timeout.
const LIMIT: Duration = Duration::from_secs(5);

/// The store's keys, shared through the cluster table.
pub struct ClusterPins {
    local: Arc<dyn KeyPins>,
    table: Table,
    runtime: tokio::runtime::Handle,
}

impl ClusterPins {
    /// `runtime` runs the table's calls: [`KeyPins`] is called from blocking threads.
    pub fn new(local: Arc<dyn KeyPins>, table: Table, runtime: tokio::runtime::Handle) -> ClusterPins {
        ClusterPins { local, table, runtime }
    }

    fn block_on<T>(
        &self,
        what: &str,
        f: impl std::future::Future<Output = Result<T, super::table::TableError>>,
    ) -> Result<T, String> {
        match self.runtime.block_on(tokio::time::timeout(LIMIT, f)) {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => Err(format!("{what} on the cluster table {} took longer than {LIMIT:?}", self.table.name())),
        }
    }
}

fn pk(instance_id: &str) -> String {
    format!("hostkeys#{instance_id}")
}

fn keys_of(item: &super::table::Item) -> Vec<String> {
    get_s(item, "keys").unwrap_or_default().lines().filter(|l| !l.is_empty()).map(str::to_string).collect()
}

impl KeyPins for ClusterPins {
    fn pin(&self, host_id: &str, port: u16, address: &str, key: &str) -> Result<String, String> {
        self.local.pin(host_id, port, address, key)
    }

    fn pinned(&self, host_id: &str, port: u16) -> Result<Option<String>, String> {
        self.local.pinned(host_id, port)
    }

    fn how_to_unpin(&self, host_id: &str, port: u16) -> String {
        self.local.how_to_unpin(host_id, port)
    }

    fn instance_keys(&self, instance_id: &str, source: Option<KeySource>) -> Result<Vec<String>, String> {
        let local = self.local.instance_keys(instance_id, source)?;
        if !local.is_empty() {
            return Ok(local);
        }
        let prefix = source.map(KeySource::as_str).unwrap_or_default();
        let items = self.block_on("reading host keys", self.table.query(&pk(instance_id), prefix, 10))?;
        let mut all = Vec::new();
        for item in &items {
            let Some(from) = get_s(item, SK).and_then(KeySource::parse) else { continue };
            let keys = keys_of(item);
            // Kept locally too: the next lookup on this replica needs no table call.
            if let Err(e) = self.local.record_instance_keys(instance_id, &keys, from) {
                tracing::warn!("cannot keep the cluster's host keys of {instance_id} in the store: {e}");
            }
            all.extend(keys);
        }
        all.sort();
        all.dedup();
        Ok(all)
    }

    fn record_instance_keys(
        &self,
        instance_id: &str,
        keys: &[String],
        source: KeySource,
    ) -> Result<Vec<String>, String> {
        let item = super::table::Item::from([
            (PK.to_string(), s(pk(instance_id))),
            (SK.to_string(), s(source.as_str())),
            ("keys".to_string(), s(keys.join("\n"))),
            ("recorded_at".to_string(), s(crate::store::ts(chrono::Utc::now()))),
        ]);
        let stood = match self.block_on("recording host keys", self.table.put_if(item, "attribute_not_exists(pk)"))? {
            Written::Done => keys.to_vec(),
            Written::Refused(Some(there)) => keys_of(&there),
            Written::Refused(None) => {
                let there = self.block_on("reading host keys", self.table.get(&pk(instance_id), source.as_str()))?;
                there.map(|i| keys_of(&i)).unwrap_or_default()
            }
        };
        if let Err(e) = self.local.record_instance_keys(instance_id, &stood, source) {
            tracing::warn!("cannot keep the cluster's host keys of {instance_id} in the store: {e}");
        }
        Ok(stood)
    }
}
