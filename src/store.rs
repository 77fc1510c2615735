//! The embedded store's plumbing: one SQLite file (`<state_dir>/opsd.db`) in WAL mode, so several
//! opsd processes can record at once; opening serialised by `opsd.db.lock`; the schema brought up
//! to date from an ordered list of migrations that the wings contribute ([`crate::schema`]); every
//! call on a blocking thread, never on the async runtime. It knows no table: each wing's
//! `history` module (and `ssh::pins`) owns its tables, rows and SQL.

use chrono::{DateTime, Utc};
use rusqlite::Connection;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a write waits for another process's transaction before failing: far above any
/// transaction opsd makes (milliseconds), below anything a user would take for a hang.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a call on the short lane ([`Store::quick_blocking`]) waits for another process's write:
/// well inside any SSH connect_timeout, which the TOFU pin check runs within.
const QUICK_BUSY_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the run history {path}: {source}; check that state_dir exists and is writable by opsd")]
    Open { path: PathBuf, source: rusqlite::Error },
    #[error("cannot create the state directory {path}: {source}; set state_dir in the config to a writable directory")]
    StateDir { path: PathBuf, source: std::io::Error },
    #[error("the run history {path} is of an older opsd (schema {version}; this one reads {latest}); run `opsd daemon` (or `opsd run`) once to upgrade it, then try again")]
    Old { path: PathBuf, version: i32, latest: i32 },
    #[error("cannot create {path}: {source}; check that state_dir is writable by opsd")]
    File { path: PathBuf, source: std::io::Error },
    #[error("cannot lock {path} while opening the run history: {source}; check that state_dir is writable by opsd")]
    Lock { path: PathBuf, source: std::io::Error },
    #[error("run history: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("run history: the background task failed: {0}")]
    Join(String),
}

/// One step of the schema. Steps of one version run in one transaction, in list order, and set
/// `PRAGMA user_version` to it; a version's SQL is written to be idempotent (`IF NOT EXISTS`).
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: i32,
    /// Whose tables these are, for errors.
    pub owner: &'static str,
    pub sql: &'static str,
}

/// A handle on the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
    /// The short lane: its own connection with a short busy timeout, for calls made inside another
    /// deadline (the TOFU pin check inside a host's connect_timeout), which must neither queue
    /// behind run writes nor wait long on another process.
    quick: Arc<Mutex<Connection>>,
    path: PathBuf,
}

impl Store {
    /// Open (and create or migrate to `schema`) the store in `state_dir`.
    pub async fn open(state_dir: &Path, schema: &'static [Migration]) -> Result<Store, StoreError> {
        let dir = state_dir.to_path_buf();
        tokio::task::spawn_blocking(move || Self::open_blocking(&dir, schema))
            .await
            .map_err(|e| StoreError::Join(e.to_string()))?
    }

    pub fn open_blocking(state_dir: &Path, schema: &[Migration]) -> Result<Store, StoreError> {
        private_dir(state_dir).map_err(|source| StoreError::StateDir { path: state_dir.to_path_buf(), source })?;
        let path = state_dir.join("opsd.db");
        let open = |path: &Path| -> rusqlite::Result<Connection> {
            let conn = Connection::open(path)?;
            conn.busy_timeout(BUSY_TIMEOUT)?;
            conn.pragma_update(None, "journal_mode", "WAL")?;
            conn.pragma_update(None, "synchronous", "NORMAL")?;
            conn.pragma_update(None, "foreign_keys", "ON")?;
            migrate(&conn, schema)?;
            Ok(conn)
        };
        // Switching a new database to WAL and creating the schema upgrade a read lock to a write
        // lock, which SQLite refuses at once (no busy wait) when another process is doing the same.
        // Processes opening the store therefore take turns through an advisory lock on a side file;
        // it is held for milliseconds and released when the file is closed.
        let lock_path = state_dir.join("opsd.db.lock");
        let lock = private_options()
            .open(&lock_path)
            .and_then(|f| f.lock().map(|_| f))
            .map_err(|source| StoreError::Lock { path: lock_path, source })?;
        // Created (under the lock, so a reader never sees it without its schema) empty and private
        // before SQLite opens it: an empty file is a new database, and its WAL and shared-memory
        // files take the database file's mode.
        private_file(&path).map_err(|source| StoreError::File { path: path.clone(), source })?;
        let conn = open(&path).map_err(|source| StoreError::Open { path: path.clone(), source })?;
        let quick = open(&path)
            .and_then(|c| c.busy_timeout(QUICK_BUSY_TIMEOUT).map(|_| c))
            .map_err(|source| StoreError::Open { path: path.clone(), source })?;
        drop(lock);
        Ok(Store { conn: Arc::new(Mutex::new(conn)), quick: Arc::new(Mutex::new(quick)), path })
    }

    /// Open the store for reading only (`history`, `jobs`, the status commands): nothing is created,
    /// migrated or written. No store yet: an empty one in memory, so the commands show nothing
    /// rather than fail. A store of an older schema is an error that says how to upgrade it.
    pub async fn open_read_only(state_dir: &Path, schema: &'static [Migration]) -> Result<Store, StoreError> {
        let path = state_dir.join("opsd.db");
        tokio::task::spawn_blocking(move || {
            use rusqlite::OpenFlags;
            let open = |path: &Path| -> Result<Connection, StoreError> {
                if !path.exists() {
                    let c = Connection::open_in_memory().map_err(StoreError::Sql)?;
                    migrate(&c, schema).map_err(StoreError::Sql)?;
                    return Ok(c);
                }
                // Not SQLITE_OPEN_READ_ONLY: such a connection may not use the WAL index the daemon
                // keeps, and reads the database as of its last checkpoint. Writes are refused
                // (`query_only`), nothing is created, and closing does not checkpoint.
                let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
                let c = Connection::open_with_flags(path, flags)
                    .map_err(|source| StoreError::Open { path: path.to_path_buf(), source })?;
                c.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)
                    .map_err(StoreError::Sql)?;
                c.pragma_update(None, "query_only", true).map_err(StoreError::Sql)?;
                c.busy_timeout(BUSY_TIMEOUT).map_err(StoreError::Sql)?;
                let latest = schema.iter().map(|m| m.version).max().unwrap_or(0);
                // A store another opsd is migrating right now is current within moments: wait for
                // it (a few seconds) before calling it old.
                let patience = std::time::Instant::now() + std::time::Duration::from_secs(5);
                let version = loop {
                    let v: i32 = c.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(StoreError::Sql)?;
                    if v == 0 || v >= latest || std::time::Instant::now() >= patience {
                        break v;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(50));
                };
                if version == 0 {
                    // Being created right now by another opsd (the file exists, its schema not yet).
                    let c = Connection::open_in_memory().map_err(StoreError::Sql)?;
                    migrate(&c, schema).map_err(StoreError::Sql)?;
                    return Ok(c);
                }
                if version < latest {
                    return Err(StoreError::Old { path: path.to_path_buf(), version, latest });
                }
                Ok(c)
            };
            // Wait out a writer creating or migrating the store (it holds the side file's lock
            // meanwhile), so its schema is read whole, never half-way.
            let lock_path = path.with_file_name("opsd.db.lock");
            let _turn = std::fs::File::open(&lock_path)
                .ok()
                .map(|f| f.lock_shared().map(|_| f))
                .transpose()
                .map_err(|source| StoreError::Lock { path: lock_path, source })?;
            Ok(Store { conn: Arc::new(Mutex::new(open(&path)?)), quick: Arc::new(Mutex::new(open(&path)?)), path })
        })
        .await
        .map_err(|e| StoreError::Join(e.to_string()))?
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Run `f` on the store's connection, on a blocking thread.
    pub async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || f(&mut conn.lock().unwrap_or_else(|p| p.into_inner())))
            .await
            .map_err(|e| StoreError::Join(e.to_string()))?
    }

    /// Run `f` on the short lane, on the calling thread: for callers already on a blocking thread
    /// that must not wait long (see [`QUICK_BUSY_TIMEOUT`]).
    pub fn quick_blocking<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> rusqlite::Result<T> {
        f(&self.quick.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// A time as the store keeps it: RFC 3339, UTC, milliseconds (sorts as text).
pub fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A stored time back (the epoch for text that is not one, which opsd never writes).
pub fn parse_ts(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&Utc)).unwrap_or_default()
}

/// Bring the schema to the highest version of `schema`: each version above the database's, in
/// order, in its own IMMEDIATE transaction. A database of a newer opsd is left as it is.
fn migrate(c: &Connection, schema: &[Migration]) -> rusqlite::Result<()> {
    let current: i32 = c.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let mut versions: Vec<i32> = schema.iter().map(|m| m.version).filter(|v| *v > current).collect();
    versions.sort_unstable();
    versions.dedup();
    for v in versions {
        c.execute_batch("BEGIN IMMEDIATE")?;
        let steps = schema.iter().filter(|m| m.version == v).try_for_each(|m| c.execute_batch(m.sql));
        let done = steps.and_then(|_| c.pragma_update(None, "user_version", v));
        match done {
            Ok(()) => c.execute_batch("COMMIT")?,
            Err(e) => {
                let _ = c.execute_batch("ROLLBACK");
                return Err(e);
            }
        }
    }
    Ok(())
}

/// Create `dir` (and its parents) if missing, the last one readable by its owner only: it holds
/// the run history with the hosts' output and the TOFU pins. An existing directory is left as the
/// administrator set it (systemd's `StateDirectory=` makes it 0700 too).
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        r => r,
    }
}

/// Options that create a file readable and writable by its owner only (0600), never truncating.
pub fn private_options() -> std::fs::OpenOptions {
    use std::os::unix::fs::OpenOptionsExt;
    let mut o = std::fs::OpenOptions::new();
    o.create(true).truncate(false).write(true).mode(0o600);
    o
}

/// Create `path` empty and private (0600) if it does not exist.
fn private_file(path: &Path) -> std::io::Result<()> {
    private_options().open(path).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCHEMA: &[Migration] = &[
        Migration { version: 1, owner: "a", sql: "CREATE TABLE IF NOT EXISTS a (x INTEGER)" },
        Migration { version: 1, owner: "b", sql: "CREATE TABLE IF NOT EXISTS b (y INTEGER)" },
        Migration { version: 2, owner: "a", sql: "ALTER TABLE a ADD COLUMN z TEXT" },
    ];

    /// Several processes (here: threads with their own connections and lock-file handles, which
    /// SQLite and flock treat alike) creating the same new store at once all succeed.
    #[test]
    fn concurrent_first_opens_all_succeed() {
        for round in 0..100 {
            let dir = std::env::temp_dir().join(format!("opsd-store-race-{}-{round}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            let barrier = Arc::new(std::sync::Barrier::new(8));
            let opens: Vec<_> = (0..8)
                .map(|_| {
                    let (dir, barrier) = (dir.clone(), barrier.clone());
                    std::thread::spawn(move || {
                        barrier.wait();
                        Store::open_blocking(&dir, SCHEMA).map(|_| ())
                    })
                })
                .collect();
            for o in opens {
                if let Err(e) = o.join().unwrap() {
                    panic!("round {round}: {e}");
                }
            }
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }

    /// Each version's steps run once, in order; a store already at a version skips it, and one at
    /// a newer version than this opsd knows is left alone.
    #[test]
    fn migrations_run_once_per_version() {
        let dir = tempfile::tempdir().unwrap();
        Store::open_blocking(dir.path(), &SCHEMA[..2]).unwrap();
        let s = Store::open_blocking(dir.path(), SCHEMA).unwrap();
        let (v, cols): (i32, i64) = s
            .quick_blocking(|c| {
                Ok((
                    c.query_row("PRAGMA user_version", [], |r| r.get(0))?,
                    c.query_row("SELECT COUNT(*) FROM pragma_table_info('a')", [], |r| r.get(0))?,
                ))
            })
            .unwrap();
        assert_eq!((v, cols), (2, 2));
        // Opening again (no ALTER repeated, which would fail) and with an older list both work.
        Store::open_blocking(dir.path(), SCHEMA).unwrap();
        Store::open_blocking(dir.path(), &SCHEMA[..1]).unwrap();
    }
}
