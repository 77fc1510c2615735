//! TOFU host-key pins, kept in the store (table `host_keys`) so that pinning is atomic across opsd
//! processes: the first key a host offers is pinned under its instance id; a later different key
//! refuses the host. Calls come from a blocking thread inside a host's connect_timeout, so they use
//! the store's short lane.

use super::KeyPins;
use crate::store::{ts, Migration, Store};
use chrono::Utc;
use rusqlite::{params, OptionalExtension};

/// The pins' table (created with the first version of the store).
pub const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    owner: "ssh::pins",
    sql: "CREATE TABLE IF NOT EXISTS host_keys (
            host_id TEXT PRIMARY KEY, address TEXT NOT NULL, key TEXT NOT NULL, pinned_at TEXT NOT NULL);",
}];

/// The store as the SSH layer's pin keeper.
pub struct StorePins(pub Store);

impl KeyPins for StorePins {
    fn pin(&self, host_id: &str, address: &str, key: &str) -> Result<String, String> {
        // INSERT OR IGNORE then read: the first writer wins, across processes too.
        self.0
            .quick_blocking(|c| {
                c.execute(
                    "INSERT OR IGNORE INTO host_keys (host_id, address, key, pinned_at) VALUES (?1, ?2, ?3, ?4)",
                    params![host_id, address, key, ts(Utc::now())],
                )?;
                c.query_row("SELECT key FROM host_keys WHERE host_id = ?1", [host_id], |r| r.get(0))
            })
            .map_err(|e| format!("{e}"))
    }

    fn pinned(&self, host_id: &str) -> Result<Option<String>, String> {
        self.0
            .quick_blocking(|c| {
                c.query_row("SELECT key FROM host_keys WHERE host_id = ?1", [host_id], |r| r.get(0)).optional()
            })
            .map_err(|e| format!("{e}"))
    }

    fn how_to_unpin(&self, host_id: &str) -> String {
        format!("sqlite3 '{}' \"DELETE FROM host_keys WHERE host_id = '{host_id}'\"", self.0.path().display())
    }
}
