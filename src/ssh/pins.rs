//! Host keys opsd trusts, kept in the store so that pinning is atomic across opsd processes.
//! - TOFU pins (table `host_keys`): the first key a host offers is pinned under its instance id and
//!   port (two sshd on one instance have two keys); a later different key refuses the host. Pins
//!   made before ports were recorded (port 0) hold for every port.
//! - Instance keys (table `instance_host_keys`): the keys cloud-init printed to an instance's console,
//!   recorded by a run (`console`) or by the lifecycle action while the instance launched
//!   (`lifecycle`); per instance, for every port. The first set recorded from a source stands.
//!
//! Calls come from a blocking thread inside a host's connect_timeout, so they use the store's short
//! lane. Keys of instances that are gone are pruned by the daemon ([`prune_gone`]).

use super::KeyPins;
use crate::store::{ts, Migration, Store};
use chrono::Utc;
use rusqlite::{params, OptionalExtension};

/// The pins' table (created with the first version of the store; keyed by port from version 9).
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        owner: "ssh::pins",
        sql: "CREATE TABLE IF NOT EXISTS host_keys (
            host_id TEXT PRIMARY KEY, address TEXT NOT NULL, key TEXT NOT NULL, pinned_at TEXT NOT NULL);",
    },
    Migration {
        version: 9,
        owner: "ssh::pins",
        sql: "CREATE TABLE host_keys_by_port (
                host_id TEXT NOT NULL, port INTEGER NOT NULL, address TEXT NOT NULL, key TEXT NOT NULL,
                pinned_at TEXT NOT NULL, PRIMARY KEY (host_id, port));
              INSERT INTO host_keys_by_port SELECT host_id, 0, address, key, pinned_at FROM host_keys;
              DROP TABLE host_keys;
              ALTER TABLE host_keys_by_port RENAME TO host_keys;",
    },
    Migration {
        version: 10,
        owner: "ssh::pins",
        sql: "CREATE TABLE instance_host_keys (
                instance_id TEXT NOT NULL, source TEXT NOT NULL, key TEXT NOT NULL, recorded_at TEXT NOT NULL,
                PRIMARY KEY (instance_id, source, key));",
    },
];

/// Where an instance's recorded host keys came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource {
    /// Read from the console output by a run (`host_keys = "console"`).
    Console,
    /// Read from the console output by the lifecycle action, before the instance went InService.
    Lifecycle,
}

impl KeySource {
    pub fn as_str(self) -> &'static str {
        match self {
            KeySource::Console => "console",
            KeySource::Lifecycle => "lifecycle",
        }
    }

    pub fn parse(s: &str) -> Option<KeySource> {
        [KeySource::Console, KeySource::Lifecycle].into_iter().find(|k| k.as_str() == s)
    }
}

/// The pin that holds for `host_id` at `port`: its own, or one from before ports were recorded.
const LOOKUP: &str = "SELECT key FROM host_keys WHERE host_id = ?1 AND port IN (?2, 0) ORDER BY port DESC LIMIT 1";

/// The store as the SSH layer's pin keeper.
pub struct StorePins(pub Store);

impl KeyPins for StorePins {
    fn pin(&self, host_id: &str, port: u16, address: &str, key: &str) -> Result<String, String> {
        // An older pin for every port stands; else INSERT OR IGNORE then read: the first writer
        // wins, across processes too.
        self.0
            .quick_blocking(|c| {
                if let Some(k) = c.query_row(LOOKUP, params![host_id, port], |r| r.get(0)).optional()? {
                    return Ok(k);
                }
                c.execute(
                    "INSERT OR IGNORE INTO host_keys (host_id, port, address, key, pinned_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![host_id, port, address, key, ts(Utc::now())],
                )?;
                c.query_row(LOOKUP, params![host_id, port], |r| r.get(0))
            })
            .map_err(|e| format!("{e}"))
    }

    fn pinned(&self, host_id: &str, port: u16) -> Result<Option<String>, String> {
        self.0
            .quick_blocking(|c| c.query_row(LOOKUP, params![host_id, port], |r| r.get(0)).optional())
            .map_err(|e| format!("{e}"))
    }

    fn how_to_unpin(&self, host_id: &str, port: u16) -> String {
        format!(
            "sqlite3 '{}' \"DELETE FROM host_keys WHERE host_id = '{host_id}' AND port IN ({port}, 0)\"",
            self.0.path().display()
        )
    }

    fn instance_keys(&self, instance_id: &str, source: Option<KeySource>) -> Result<Vec<String>, String> {
        let source = source.map(KeySource::as_str);
        self.0.quick_blocking(|c| instance_keys(c, instance_id, source)).map_err(|e| format!("{e}"))
    }

    fn record_instance_keys(
        &self,
        instance_id: &str,
        keys: &[String],
        source: KeySource,
    ) -> Result<Vec<String>, String> {
        self.0
            .quick_blocking(|c| {
                // IMMEDIATE: a deferred transaction that reads, then writes, fails at once with
                // SQLITE_BUSY when another connection writes meanwhile (no busy wait for an upgrade).
                let tx = rusqlite::Transaction::new_unchecked(c, rusqlite::TransactionBehavior::Immediate)?;
                let had = instance_keys(&tx, instance_id, Some(source.as_str()))?;
                if had.is_empty() {
                    let now = ts(Utc::now());
                    for k in keys {
                        tx.execute(
                            "INSERT OR IGNORE INTO instance_host_keys (instance_id, source, key, recorded_at) VALUES (?1, ?2, ?3, ?4)",
                            params![instance_id, source.as_str(), k, now],
                        )?;
                    }
                }
                let now_recorded = instance_keys(&tx, instance_id, Some(source.as_str()))?;
                tx.commit()?;
                Ok(now_recorded)
            })
            .map_err(|e| format!("{e}"))
    }
}

fn instance_keys(c: &rusqlite::Connection, instance_id: &str, source: Option<&str>) -> rusqlite::Result<Vec<String>> {
    let mut st = c.prepare_cached(
        "SELECT DISTINCT key FROM instance_host_keys WHERE instance_id = ?1 AND (?2 IS NULL OR source = ?2) ORDER BY key",
    )?;
    let keys = st.query_map(params![instance_id, source], |r| r.get(0))?.collect();
    keys
}

/// Delete the pins of EC2 instances EC2 reports `terminated`: a new instance never reuses an id, so
/// such a pin can never be used again. Only on that evidence: an id this region and account does
/// not show (another region's host, from a hosts file) keeps its pin. Hosts named by address are
/// kept. Returns how many pins went.
pub async fn prune_gone(store: &Store, ec2: &aws_sdk_ec2::Client) -> Result<usize, String> {
    use aws_sdk_ec2::types::Filter;
    let ids: Vec<String> = store
        .call(|c| {
            let mut st = c.prepare(
                "SELECT host_id FROM host_keys WHERE host_id LIKE 'i-%' UNION SELECT instance_id FROM instance_host_keys",
            )?;
            let ids = st.query_map([], |r| r.get(0))?.collect::<Result<Vec<String>, _>>()?;
            Ok(ids)
        })
        .await
        .map_err(|e| e.to_string())?;
    let mut gone = Vec::new();
    // A filter (not InstanceIds) so an id EC2 does not know is simply not listed.
    for chunk in ids.chunks(200) {
        let mut pages = ec2
            .describe_instances()
            .filters(Filter::builder().name("instance-id").set_values(Some(chunk.to_vec())).build())
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| crate::aws::call_error("DescribeInstances", e).to_string())?;
            for i in page.reservations().iter().flat_map(|r| r.instances()) {
                let terminated = i.state().and_then(|s| s.name()).is_some_and(|n| n.as_str() == "terminated");
                if let (Some(id), true) = (i.instance_id(), terminated) {
                    gone.push(id.to_string());
                }
            }
        }
    }
    if gone.is_empty() {
        return Ok(0);
    }
    store
        .call(move |c| {
            let tx = c.transaction()?;
            let mut n = 0;
            for id in &gone {
                n += tx.execute("DELETE FROM host_keys WHERE host_id = ?1", [id])?;
                n += tx.execute("DELETE FROM instance_host_keys WHERE instance_id = ?1", [id])?;
            }
            tx.commit()?;
            Ok(n)
        })
        .await
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::MIGRATIONS as SCHEMA;

    /// Pins are per instance and port; a pin from before ports were recorded (migrated to port 0)
    /// holds for every port and is not overridden.
    #[test]
    fn pins_are_per_instance_and_port() {
        let dir = tempfile::tempdir().unwrap();
        // A store as released before version 9, with one pin.
        let old: Vec<Migration> = SCHEMA.iter().filter(|m| m.version < 9).copied().collect();
        let s = Store::open_blocking(dir.path(), &old).unwrap();
        s.quick_blocking(|c| {
            c.execute(
                "INSERT INTO host_keys VALUES ('i-old', '10.0.0.1', 'ssh-ed25519 OLD', '2026-01-01T00:00:00Z')",
                [],
            )
        })
        .unwrap();
        drop(s);
        let pins = StorePins(Store::open_blocking(dir.path(), SCHEMA).unwrap());
        assert_eq!(pins.pinned("i-old", 2222).unwrap().as_deref(), Some("ssh-ed25519 OLD"));
        assert_eq!(pins.pin("i-old", 22, "10.0.0.1", "ssh-ed25519 NEW").unwrap(), "ssh-ed25519 OLD");
        // New pins: one per port, the first key wins.
        assert_eq!(pins.pin("i-new", 22, "10.0.0.2", "ssh-ed25519 A").unwrap(), "ssh-ed25519 A");
        assert_eq!(pins.pinned("i-new", 2222).unwrap(), None);
        assert_eq!(pins.pin("i-new", 2222, "10.0.0.2", "ssh-ed25519 B").unwrap(), "ssh-ed25519 B");
        assert_eq!(pins.pin("i-new", 22, "10.0.0.2", "ssh-ed25519 C").unwrap(), "ssh-ed25519 A");
        assert!(pins.how_to_unpin("i-new", 2222).contains("port IN (2222, 0)"));
    }

    /// Instance keys: the first set recorded from a source stands; any source answers a lookup
    /// without one. Recording waits for another connection's write (a run recording its hosts)
    /// instead of failing with "database is locked".
    #[test]
    fn instance_keys_first_set_stands_and_waits_for_writers() {
        let dir = tempfile::tempdir().unwrap();
        let pins = StorePins(Store::open_blocking(dir.path(), SCHEMA).unwrap());
        let a = vec!["ssh-ed25519 A".to_string()];
        assert_eq!(pins.record_instance_keys("i-1", &a, KeySource::Console).unwrap(), a);
        let b = vec!["ssh-ed25519 B".to_string()];
        assert_eq!(pins.record_instance_keys("i-1", &b, KeySource::Console).unwrap(), a, "the first set stands");
        assert_eq!(pins.record_instance_keys("i-1", &b, KeySource::Lifecycle).unwrap(), b);
        assert_eq!(pins.instance_keys("i-1", Some(KeySource::Lifecycle)).unwrap(), b);
        assert_eq!(pins.instance_keys("i-1", None).unwrap().len(), 2);
        // Another connection holds the write lock for a while, and writes.
        let other = rusqlite::Connection::open(dir.path().join("opsd.db")).unwrap();
        other
            .execute_batch("BEGIN IMMEDIATE; INSERT INTO instance_host_keys VALUES ('i-9', 'console', 'k', 't');")
            .unwrap();
        let writer = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(300));
            other.execute_batch("COMMIT").unwrap();
        });
        let c = vec!["ssh-ed25519 C".to_string()];
        assert_eq!(pins.record_instance_keys("i-2", &c, KeySource::Console).unwrap(), c);
        writer.join().unwrap();
    }
}
