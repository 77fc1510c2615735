//! The embedded run history: one SQLite file (`<state_dir>/opsd.db`) in WAL mode, so several opsd
//! processes can record at once. Calls run on a blocking thread, never on the async runtime.
//! It also keeps the TOFU host-key pins, so pinning is atomic across processes.

use crate::fleet::Host;
use crate::outcome::{CommandResult, ErrorKind, HostResult, HostStatus};
use crate::ssh::KeyPins;
use chrono::{DateTime, Utc};
use rusqlite::types::Value;
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a write waits for another process's transaction before failing: far above any
/// transaction opsd makes (milliseconds), below anything a user would take for a hang.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a TOFU pin check waits for another process's write: well inside any connect_timeout.
const PIN_BUSY_TIMEOUT: Duration = Duration::from_secs(3);
const SCHEMA_VERSION: i32 = 7;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the run history {path}: {source}; check that state_dir exists and is writable by opsd")]
    Open { path: PathBuf, source: rusqlite::Error },
    #[error("cannot create the state directory {path}: {source}; set state_dir in the config to a writable directory")]
    StateDir { path: PathBuf, source: std::io::Error },
    #[error("cannot lock {path} while opening the run history: {source}; check that state_dir is writable by opsd")]
    Lock { path: PathBuf, source: std::io::Error },
    #[error("run history: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("run history: the background task failed: {0}")]
    Join(String),
    #[error("run {0} is not in the history; `opsd history` lists the runs")]
    NoSuchRun(i64),
}

/// The capacity controller's latest evaluation ([`Store::capacity_latest`]).
#[derive(Debug, Clone)]
pub struct CapacityLatest {
    pub decision: DecisionRecord,
    pub below_target_since: Option<DateTime<Utc>>,
    /// The cluster and fleet evaluated, as `capacity::scope` writes them.
    pub scope: String,
}

/// What one [`Store::prune`] call deleted.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Pruned {
    pub runs: usize,
    pub lifecycle_actions: usize,
    pub capacity_decisions: usize,
}

/// A handle on the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
    /// TOFU pins use their own connection, with a short busy timeout: a pin check runs inside a
    /// host's connect_timeout and must neither queue behind run writes nor wait long on another process.
    pins: Arc<Mutex<Connection>>,
    path: PathBuf,
}

/// One run as listed by `opsd history`.
#[derive(Debug, Clone, Serialize)]
pub struct RunRecord {
    pub id: i64,
    pub job: String,
    pub trigger: String,
    pub started_at: String,
    pub ended_at: Option<String>,
    pub outcome: String,
    pub hosts_total: i64,
    pub hosts_ok: i64,
    pub hosts_failed: i64,
    pub hosts_skipped: i64,
    /// The firing time a scheduled run belongs to (before jitter); none for runs by hand.
    pub scheduled_for: Option<String>,
    /// Why a run was skipped or ended in error.
    pub reason: Option<String>,
}

/// Counts and outcome written when a run ends.
#[derive(Debug, Clone, Copy)]
pub struct RunEnd<'a> {
    pub outcome: &'a str,
    pub ok: usize,
    pub failed: usize,
    pub skipped: usize,
    /// Why the run ended this way, when it is not evident from the hosts (AWS error, shutdown).
    pub reason: Option<&'a str>,
}

/// One lifecycle action as worked by the consumer.
#[derive(Debug, Clone, Serialize)]
pub struct ActionRecord {
    pub message_id: String,
    pub group: String,
    pub hook: String,
    pub instance_id: String,
    /// `launch` or `terminate`.
    pub transition: String,
    /// CONTINUE or ABANDON.
    pub result: String,
    /// `completed`, `expired` (no active action any more), `complete_failed`, …
    pub outcome: String,
    pub eni_id: Option<String>,
    pub error: Option<String>,
    pub started_at: DateTime<Utc>,
    pub ended_at: DateTime<Utc>,
    /// Milliseconds of the action spent in AWS calls (the rest is opsd's own work and its waits).
    pub aws_ms: Option<u64>,
}

/// One capacity decision.
#[derive(Debug, Clone, Serialize)]
pub struct DecisionRecord {
    pub at: DateTime<Utc>,
    /// `hold`, `scale_out` or `scale_in`.
    pub action: String,
    pub from_capacity: f64,
    pub to_capacity: f64,
    /// EC2 instance ids, comma-separated.
    pub victims: String,
    pub reservation: f64,
    pub unplaced: i64,
    pub reason: String,
    /// `acted`, `held`, `dry_run` or `failed`; `started` while opsd acts on it (left so by a crash
    /// until the next start finds it), then `interrupted` if it was cut short.
    pub outcome: String,
    pub error: Option<String>,
    pub dry_run: bool,
    /// When acting on it ended (the scale-in cooldown counts from here); `None` while `started`.
    pub ended_at: Option<DateTime<Utc>>,
}

/// A decision's columns (at, action, from, to, victims, reservation, unplaced, reason, outcome,
/// error, dry_run, ended_at), in the order [`decision_row`] reads them.
fn decision_values(d: &DecisionRecord) -> Vec<Value> {
    vec![
        Value::Text(ts(d.at)),
        Value::Text(d.action.clone()),
        Value::Real(d.from_capacity),
        Value::Real(d.to_capacity),
        Value::Text(d.victims.clone()),
        Value::Real(d.reservation),
        Value::Integer(d.unplaced),
        Value::Text(d.reason.clone()),
        Value::Text(d.outcome.clone()),
        d.error.clone().map_or(Value::Null, Value::Text),
        Value::Integer(i64::from(d.dry_run)),
        d.ended_at.map(ts).map_or(Value::Null, Value::Text),
    ]
}

/// A `capacity_decisions` row from column `at` on (at, action, from, to, victims, reservation,
/// unplaced, reason, outcome, error, dry_run, ended_at).
fn decision_row(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<DecisionRecord> {
    Ok(DecisionRecord {
        at: parse_ts(&r.get::<_, String>(at)?),
        action: r.get(at + 1)?,
        from_capacity: r.get(at + 2)?,
        to_capacity: r.get(at + 3)?,
        victims: r.get(at + 4)?,
        reservation: r.get(at + 5)?,
        unplaced: r.get(at + 6)?,
        reason: r.get(at + 7)?,
        outcome: r.get(at + 8)?,
        error: r.get(at + 9)?,
        dry_run: r.get(at + 10)?,
        ended_at: r.get::<_, Option<String>>(at + 11)?.as_deref().map(parse_ts),
    })
}

/// How a run was started.
#[derive(Debug, Clone, Copy)]
pub struct RunStart<'a> {
    pub job: &'a str,
    /// `manual`, `schedule` or `catch-up`.
    pub trigger: &'a str,
    pub hosts_total: usize,
    pub started_at: DateTime<Utc>,
    pub scheduled_for: Option<DateTime<Utc>>,
}

impl Store {
    /// Open (and create or migrate) the store in `state_dir`.
    pub async fn open(state_dir: &Path) -> Result<Store, StoreError> {
        let dir = state_dir.to_path_buf();
        tokio::task::spawn_blocking(move || Self::open_blocking(&dir))
            .await
            .map_err(|e| StoreError::Join(e.to_string()))?
    }

    pub fn open_blocking(state_dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(state_dir)
            .map_err(|source| StoreError::StateDir { path: state_dir.to_path_buf(), source })?;
        let path = state_dir.join("opsd.db");
        let open = |path: &Path| -> rusqlite::Result<Connection> {
            let conn = Connection::open(path)?;
            conn.busy_timeout(BUSY_TIMEOUT)?;
            conn.pragma_update(None, "journal_mode", "WAL")?;
            conn.pragma_update(None, "synchronous", "NORMAL")?;
            conn.pragma_update(None, "foreign_keys", "ON")?;
            migrate(&conn)?;
            Ok(conn)
        };
        // Switching a new database to WAL and creating the schema upgrade a read lock to a write
        // lock, which SQLite refuses at once (no busy wait) when another process is doing the same.
        // Processes opening the store therefore take turns through an advisory lock on a side file;
        // it is held for milliseconds and released when the file is closed.
        let lock_path = state_dir.join("opsd.db.lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .and_then(|f| f.lock().map(|_| f))
            .map_err(|source| StoreError::Lock { path: lock_path, source })?;
        let conn = open(&path).map_err(|source| StoreError::Open { path: path.clone(), source })?;
        let pins = open(&path)
            .and_then(|c| c.busy_timeout(PIN_BUSY_TIMEOUT).map(|_| c))
            .map_err(|source| StoreError::Open { path: path.clone(), source })?;
        drop(lock);
        Ok(Store { conn: Arc::new(Mutex::new(conn)), pins: Arc::new(Mutex::new(pins)), path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || f(&mut conn.lock().unwrap_or_else(|p| p.into_inner())))
            .await
            .map_err(|e| StoreError::Join(e.to_string()))?
    }

    /// Record the start of a run; returns its id.
    pub async fn start_run(&self, start: RunStart<'_>) -> Result<i64, StoreError> {
        let (job, trigger) = (start.job.to_string(), start.trigger.to_string());
        let (started_at, scheduled_for) = (ts(start.started_at), start.scheduled_for.map(ts));
        let hosts_total = start.hosts_total as i64;
        self.call(move |c| {
            c.execute(
                "INSERT INTO runs (job, trigger, started_at, outcome, hosts_total, scheduled_for)
                 VALUES (?1, ?2, ?3, 'running', ?4, ?5)",
                params![job, trigger, started_at, hosts_total, scheduled_for],
            )?;
            Ok(c.last_insert_rowid())
        })
        .await
    }

    /// Record a firing that ran on no host: `skipped` (overlap policy, shutdown) or `error` (the
    /// target could not be resolved, the SSH key could not be read), with the reason.
    pub async fn record_firing(
        &self,
        job: &str,
        trigger: &str,
        scheduled_for: DateTime<Utc>,
        outcome: &'static str,
        reason: &str,
    ) -> Result<i64, StoreError> {
        let (job, trigger, reason) = (job.to_string(), trigger.to_string(), reason.to_string());
        let (now, scheduled_for) = (ts(Utc::now()), ts(scheduled_for));
        self.call(move |c| {
            c.execute(
                "INSERT INTO runs (job, trigger, started_at, ended_at, outcome, scheduled_for, reason)
                 VALUES (?1, ?2, ?3, ?3, ?4, ?5, ?6)",
                params![job, trigger, now, outcome, scheduled_for, reason],
            )?;
            Ok(c.last_insert_rowid())
        })
        .await
    }

    pub async fn record_action(&self, a: ActionRecord) -> Result<(), StoreError> {
        self.call(move |c| {
            c.execute(
                "INSERT INTO lifecycle_actions (message_id, asg, hook, instance_id, transition, result, outcome,
                 eni_id, error, started_at, ended_at, aws_ms) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12)",
                params![
                    a.message_id,
                    a.group,
                    a.hook,
                    a.instance_id,
                    a.transition,
                    a.result,
                    a.outcome,
                    a.eni_id,
                    a.error,
                    ts(a.started_at),
                    ts(a.ended_at),
                    a.aws_ms.map(|v| v as i64)
                ],
            )?;
            Ok(())
        })
        .await
    }

    /// Record a decision; returns its id (for [`Store::finish_decision`]).
    pub async fn record_decision(&self, d: DecisionRecord) -> Result<i64, StoreError> {
        self.call(move |c| {
            c.execute(
                "INSERT INTO capacity_decisions (at, action, from_capacity, to_capacity, victims, reservation, unplaced,
                 reason, outcome, error, dry_run, ended_at) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12)",
                rusqlite::params_from_iter(decision_values(&d)),
            )?;
            Ok(c.last_insert_rowid())
        })
        .await
    }

    /// The outcome of a decision recorded as `started`.
    pub async fn finish_decision(&self, id: i64, outcome: &str, error: Option<String>) -> Result<(), StoreError> {
        let outcome = outcome.to_string();
        self.call(move |c| {
            let ended = (outcome != "started").then(|| ts(Utc::now()));
            c.execute(
                "UPDATE capacity_decisions SET outcome = ?2, error = ?3, ended_at = ?4 WHERE id = ?1",
                params![id, outcome, error, ended],
            )?;
            Ok(())
        })
        .await
    }

    /// Decisions still `started`: opsd stopped while acting on them. Oldest first, with their ids.
    pub async fn unfinished_decisions(&self) -> Result<Vec<(i64, DecisionRecord)>, StoreError> {
        self.call(move |c| {
            let mut st = c.prepare(
                "SELECT id, at, action, from_capacity, to_capacity, victims, reservation, unplaced, reason, outcome,
                 error, dry_run, ended_at FROM capacity_decisions WHERE outcome = 'started' ORDER BY id",
            )?;
            let rows = st.query_map([], |r| Ok((r.get(0)?, decision_row(r, 1)?)))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    /// The most recent capacity decisions, newest first.
    pub async fn decisions(&self, limit: usize) -> Result<Vec<DecisionRecord>, StoreError> {
        self.call(move |c| {
            let mut st = c.prepare(
                "SELECT at, action, from_capacity, to_capacity, victims, reservation, unplaced, reason, outcome, error,
                 dry_run, ended_at FROM capacity_decisions ORDER BY id DESC LIMIT ?1",
            )?;
            let rows = st.query_map([limit as i64], |r| decision_row(r, 0))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    /// Replace the capacity controller's latest evaluation of `scope` (its cluster and fleet), with
    /// since when the reservation has been below target (None: it is not).
    pub async fn set_capacity_latest(
        &self,
        d: DecisionRecord,
        below_target_since: Option<DateTime<Utc>>,
        scope: String,
    ) -> Result<(), StoreError> {
        self.call(move |c| {
            c.execute(
                "INSERT OR REPLACE INTO capacity_latest (id, at, action, from_capacity, to_capacity, victims,
                 reservation, unplaced, reason, outcome, error, dry_run, ended_at, below_target_since, scope)
                 VALUES (1,?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14)",
                rusqlite::params_from_iter(
                    decision_values(&d)
                        .into_iter()
                        .chain([below_target_since.map(ts).map_or(Value::Null, Value::Text), Value::Text(scope)]),
                ),
            )?;
            Ok(())
        })
        .await
    }

    /// The capacity controller's latest evaluation, since when the reservation has been below
    /// target, and the scope (cluster and fleet) evaluated; None before the first evaluation.
    pub async fn capacity_latest(&self) -> Result<Option<CapacityLatest>, StoreError> {
        self.call(|c| {
            let mut st = c.prepare(
                "SELECT at, action, from_capacity, to_capacity, victims, reservation, unplaced, reason, outcome, error,
                 dry_run, ended_at, below_target_since, scope FROM capacity_latest WHERE id = 1",
            )?;
            let mut rows = st.query_map([], |r| {
                Ok(CapacityLatest {
                    decision: decision_row(r, 0)?,
                    below_target_since: r.get::<_, Option<String>>(12)?.as_deref().map(parse_ts),
                    scope: r.get(13)?,
                })
            })?;
            Ok(rows.next().transpose()?)
        })
        .await
    }

    /// The most recent lifecycle actions, newest first.
    pub async fn actions(&self, limit: usize) -> Result<Vec<ActionRecord>, StoreError> {
        self.call(move |c| {
            let mut st = c.prepare(
                "SELECT message_id, asg, hook, instance_id, transition, result, outcome, eni_id, error, started_at,
                 ended_at, aws_ms FROM lifecycle_actions ORDER BY id DESC LIMIT ?1",
            )?;
            let rows = st.query_map([limit as i64], |r| {
                Ok(ActionRecord {
                    message_id: r.get(0)?,
                    group: r.get(1)?,
                    hook: r.get(2)?,
                    instance_id: r.get(3)?,
                    transition: r.get(4)?,
                    result: r.get(5)?,
                    outcome: r.get(6)?,
                    eni_id: r.get(7)?,
                    error: r.get(8)?,
                    started_at: parse_ts(&r.get::<_, String>(9)?),
                    ended_at: parse_ts(&r.get::<_, String>(10)?),
                    aws_ms: r.get::<_, Option<i64>>(11)?.map(|v| v as u64),
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    /// Delete history older than `cutoff`, one short transaction per call: at most `max_runs` runs
    /// with at most `max_hosts` host records between them (one run at least), with their commands,
    /// so other writers wait milliseconds, not the whole prune. Kept whatever their age: runs still
    /// `running`, each job's latest run, and each job's latest firing and latest firing that ran
    /// (the rate anchors and `catch_up` count from them). The first call also deletes lifecycle
    /// actions and capacity decisions older than `cutoff`, but not those still `started` nor the
    /// latest of each action and outcome (the cooldowns are read back from them after a restart).
    /// Returns what went and whether older runs remain (call again).
    pub async fn prune(
        &self,
        cutoff: DateTime<Utc>,
        max_runs: usize,
        max_hosts: i64,
        first: bool,
    ) -> Result<(Pruned, bool), StoreError> {
        let cutoff = ts(cutoff);
        self.call(move |c| {
            // IMMEDIATE: a deferred transaction that read first could not become a writer once
            // another connection committed (SQLITE_BUSY_SNAPSHOT, which no busy timeout waits out).
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let mut pruned = Pruned::default();
            let candidates: Vec<(i64, i64)> = {
                let mut st = tx.prepare(
                    "SELECT id, hosts_total FROM runs WHERE started_at < ?1 AND outcome != 'running'
                     AND id NOT IN (SELECT MAX(id) FROM runs GROUP BY job)
                     AND id NOT IN (SELECT id FROM (SELECT id, MAX(scheduled_for) FROM runs
                                    WHERE scheduled_for IS NOT NULL GROUP BY job))
                     AND id NOT IN (SELECT id FROM (SELECT id, MAX(scheduled_for) FROM runs
                                    WHERE scheduled_for IS NOT NULL AND outcome != 'skipped' GROUP BY job))
                     ORDER BY id LIMIT ?2",
                )?;
                let rows = st.query_map(params![cutoff, max_runs as i64 + 1], |r| Ok((r.get(0)?, r.get(1)?)))?;
                rows.collect::<Result<_, _>>()?
            };
            let mut ids = Vec::new();
            let mut hosts = 0;
            for (id, n) in candidates.iter().take(max_runs) {
                if !ids.is_empty() && hosts + n > max_hosts {
                    break;
                }
                hosts += n;
                ids.push(*id);
            }
            let more = candidates.len() > ids.len();
            {
                let mut commands = tx.prepare("DELETE FROM commands WHERE run_id = ?1")?;
                let mut hosts = tx.prepare("DELETE FROM hosts WHERE run_id = ?1")?;
                let mut runs = tx.prepare("DELETE FROM runs WHERE id = ?1")?;
                for id in &ids {
                    commands.execute([id])?;
                    hosts.execute([id])?;
                    pruned.runs += runs.execute([id])?;
                }
            }
            if first {
                pruned.lifecycle_actions =
                    tx.execute("DELETE FROM lifecycle_actions WHERE ended_at < ?1", [&cutoff])?;
                pruned.capacity_decisions = tx.execute(
                    "DELETE FROM capacity_decisions WHERE at < ?1 AND outcome != 'started'
                     AND id NOT IN (SELECT MAX(id) FROM capacity_decisions GROUP BY action, outcome)",
                    [&cutoff],
                )?;
            }
            tx.commit()?;
            Ok((pruned, more))
        })
        .await
    }

    /// The latest firing time recorded for a job (run or skipped), for `catch_up` and rate anchors.
    pub async fn last_firing(&self, job: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        let job = job.to_string();
        self.call(move |c| {
            let t: Option<String> =
                c.query_row("SELECT MAX(scheduled_for) FROM runs WHERE job = ?1", [job], |r| r.get(0))?;
            Ok(t.as_deref().map(parse_ts))
        })
        .await
    }

    /// The latest firing of a job that started a run (not `skipped`): what `catch_up` counts from, so a
    /// firing skipped at shutdown (or by the overlap policy) does not hide one missed while down.
    pub async fn last_run_firing(&self, job: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        let job = job.to_string();
        self.call(move |c| {
            let t: Option<String> = c.query_row(
                "SELECT MAX(scheduled_for) FROM runs WHERE job = ?1 AND outcome != 'skipped'",
                [job],
                |r| r.get(0),
            )?;
            Ok(t.as_deref().map(parse_ts))
        })
        .await
    }

    /// Scheduled runs left `running` by a daemon that ended without finishing them (killed, power
    /// loss) are marked `interrupted`, so history does not show them running forever. Called by the
    /// daemon at start, while it holds the state directory's daemon lock; runs by hand are left alone.
    pub async fn interrupt_stale(&self) -> Result<usize, StoreError> {
        self.call(move |c| {
            Ok(c.execute(
                "UPDATE runs SET outcome = 'interrupted', ended_at = ?1,
                 reason = 'the daemon stopped before the run ended (killed or crashed)'
                 WHERE outcome = 'running' AND trigger != 'manual'",
                params![ts(Utc::now())],
            )?)
        })
        .await
    }

    /// Record one host's result (and its commands) in one transaction.
    pub async fn record_host(&self, run_id: i64, seq: usize, r: Arc<HostResult>) -> Result<(), StoreError> {
        self.call(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            tx.execute(
                "INSERT INTO hosts (run_id, seq, instance_id, address, name, started_at, ended_at, status, exit_status,
                 error_kind, error, stdout_dropped, stderr_dropped) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13)",
                params![
                    run_id,
                    seq as i64,
                    r.host.instance_id,
                    r.host.address,
                    r.host.name,
                    ts(r.started_at),
                    ts(r.ended_at),
                    r.status.as_str(),
                    r.exit_status,
                    r.error_kind.map(|k| k.as_str()),
                    r.error,
                    r.stdout_dropped as i64,
                    r.stderr_dropped as i64
                ],
            )?;
            for (i, cmd) in r.commands.iter().enumerate() {
                tx.execute(
                    "INSERT INTO commands (run_id, seq, idx, command, exit_status, exit_signal, stdout, stderr)
                     VALUES (?1,?2,?3,?4,?5,?6,?7,?8)",
                    params![run_id, seq as i64, i as i64, cmd.command, cmd.exit_status, cmd.exit_signal, cmd.stdout, cmd.stderr],
                )?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    pub async fn finish_run(&self, run_id: i64, end: RunEnd<'_>, ended_at: DateTime<Utc>) -> Result<(), StoreError> {
        let outcome = end.outcome.to_string();
        let reason = end.reason.map(str::to_string);
        let (ok, failed, skipped) = (end.ok as i64, end.failed as i64, end.skipped as i64);
        self.call(move |c| {
            c.execute(
                "UPDATE runs SET ended_at = ?2, outcome = ?3, hosts_ok = ?4, hosts_failed = ?5, hosts_skipped = ?6,
                 reason = ?7 WHERE id = ?1",
                params![run_id, ts(ended_at), outcome, ok, failed, skipped, reason],
            )?;
            Ok(())
        })
        .await
    }

    /// The most recent runs, newest first, optionally of one job.
    pub async fn runs(&self, job: Option<String>, limit: usize) -> Result<Vec<RunRecord>, StoreError> {
        self.call(move |c| {
            let mut st = c.prepare(
                "SELECT id, job, trigger, started_at, ended_at, outcome, hosts_total, hosts_ok, hosts_failed, hosts_skipped,
                 scheduled_for, reason FROM runs WHERE (?1 IS NULL OR job = ?1) ORDER BY id DESC LIMIT ?2",
            )?;
            let rows = st.query_map(params![job, limit as i64], run_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    /// One run with every host's result and captured output.
    pub async fn run(&self, id: i64) -> Result<(RunRecord, Vec<HostResult>), StoreError> {
        self.call(move |c| {
            let run = c
                .query_row(
                    "SELECT id, job, trigger, started_at, ended_at, outcome, hosts_total, hosts_ok, hosts_failed, hosts_skipped,
                     scheduled_for, reason FROM runs WHERE id = ?1",
                    [id],
                    run_row,
                )
                .optional()?
                .ok_or(StoreError::NoSuchRun(id))?;
            let mut st = c.prepare(
                "SELECT seq, instance_id, address, name, started_at, ended_at, status, exit_status, error_kind, error,
                 stdout_dropped, stderr_dropped FROM hosts WHERE run_id = ?1 ORDER BY seq",
            )?;
            let mut hosts: Vec<(i64, HostResult)> = st
                .query_map([id], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        HostResult {
                            host: Host { instance_id: r.get(1)?, address: r.get(2)?, name: r.get(3)? },
                            started_at: parse_ts(&r.get::<_, String>(4)?),
                            ended_at: parse_ts(&r.get::<_, String>(5)?),
                            status: HostStatus::parse(&r.get::<_, String>(6)?),
                            exit_status: r.get(7)?,
                            error_kind: r.get::<_, Option<String>>(8)?.as_deref().and_then(ErrorKind::parse),
                            error: r.get(9)?,
                            commands: Vec::new(),
                            stdout_dropped: r.get::<_, i64>(10)? as u64,
                            stderr_dropped: r.get::<_, i64>(11)? as u64,
                        },
                    ))
                })?
                .collect::<Result<_, _>>()?;
            let mut st = c.prepare(
                "SELECT seq, command, exit_status, exit_signal, stdout, stderr FROM commands WHERE run_id = ?1 ORDER BY seq, idx",
            )?;
            let cmds = st.query_map([id], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    CommandResult {
                        command: r.get(1)?,
                        exit_status: r.get(2)?,
                        exit_signal: r.get(3)?,
                        stdout: r.get(4)?,
                        stderr: r.get(5)?,
                    },
                ))
            })?;
            for row in cmds {
                let (seq, cmd) = row?;
                if let Ok(i) = hosts.binary_search_by_key(&seq, |h| h.0) {
                    hosts[i].1.commands.push(cmd);
                }
            }
            Ok((run, hosts.into_iter().map(|h| h.1).collect()))
        })
        .await
    }
}

impl KeyPins for Store {
    fn pin(&self, host_id: &str, address: &str, key: &str) -> Result<String, String> {
        let c = self.pins.lock().unwrap_or_else(|p| p.into_inner());
        // INSERT OR IGNORE then read: the first writer wins, across processes too.
        c.execute(
            "INSERT OR IGNORE INTO host_keys (host_id, address, key, pinned_at) VALUES (?1, ?2, ?3, ?4)",
            params![host_id, address, key, ts(Utc::now())],
        )
        .and_then(|_| c.query_row("SELECT key FROM host_keys WHERE host_id = ?1", [host_id], |r| r.get(0)))
        .map_err(|e| format!("{e}"))
    }

    fn pinned(&self, host_id: &str) -> Result<Option<String>, String> {
        let c = self.pins.lock().unwrap_or_else(|p| p.into_inner());
        c.query_row("SELECT key FROM host_keys WHERE host_id = ?1", [host_id], |r| r.get(0))
            .optional()
            .map_err(|e| format!("{e}"))
    }

    fn how_to_unpin(&self, host_id: &str) -> String {
        format!("sqlite3 '{}' \"DELETE FROM host_keys WHERE host_id = '{host_id}'\"", self.path.display())
    }
}

fn run_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RunRecord> {
    Ok(RunRecord {
        id: r.get(0)?,
        job: r.get(1)?,
        trigger: r.get(2)?,
        started_at: r.get(3)?,
        ended_at: r.get(4)?,
        outcome: r.get(5)?,
        hosts_total: r.get(6)?,
        hosts_ok: r.get(7)?,
        hosts_failed: r.get(8)?,
        hosts_skipped: r.get(9)?,
        scheduled_for: r.get(10)?,
        reason: r.get(11)?,
    })
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn parse_ts(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&Utc)).unwrap_or_default()
}

fn migrate(c: &Connection) -> rusqlite::Result<()> {
    let v: i32 = c.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if v >= SCHEMA_VERSION {
        return Ok(());
    }
    if v < 1 {
        create_v1(c)?;
    }
    if v < 2 {
        // v2: firing times and reasons for the daemon's runs and skipped firings.
        c.execute_batch(
            "BEGIN IMMEDIATE;
             ALTER TABLE runs ADD COLUMN scheduled_for TEXT;
             ALTER TABLE runs ADD COLUMN reason TEXT;
             CREATE INDEX IF NOT EXISTS runs_by_job_firing ON runs (job, scheduled_for);
             PRAGMA user_version = 2;
             COMMIT;",
        )?;
    }
    if v < 3 {
        // v3: lifecycle actions worked by the SQS consumer.
        c.execute_batch(
            "BEGIN IMMEDIATE;
             CREATE TABLE IF NOT EXISTS lifecycle_actions (
               id INTEGER PRIMARY KEY AUTOINCREMENT,
               message_id TEXT NOT NULL, asg TEXT NOT NULL, hook TEXT NOT NULL, instance_id TEXT NOT NULL,
               transition TEXT NOT NULL, result TEXT NOT NULL, outcome TEXT NOT NULL,
               eni_id TEXT, error TEXT, started_at TEXT NOT NULL, ended_at TEXT NOT NULL);
             CREATE INDEX IF NOT EXISTS lifecycle_by_instance ON lifecycle_actions (instance_id);
             PRAGMA user_version = 3;
             COMMIT;",
        )?;
    }
    if v < 4 {
        // v4: the capacity controller's decisions.
        c.execute_batch(
            "BEGIN IMMEDIATE;
             CREATE TABLE IF NOT EXISTS capacity_decisions (
               id INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, action TEXT NOT NULL,
               from_capacity REAL NOT NULL, to_capacity REAL NOT NULL, victims TEXT NOT NULL,
               reservation REAL NOT NULL, unplaced INTEGER NOT NULL, reason TEXT NOT NULL,
               outcome TEXT NOT NULL, error TEXT, dry_run INTEGER NOT NULL);
             PRAGMA user_version = 4;
             COMMIT;",
        )?;
    }
    if v < 5 {
        // v5: how much of a lifecycle action was spent in AWS calls.
        c.execute_batch(
            "BEGIN IMMEDIATE;
             ALTER TABLE lifecycle_actions ADD COLUMN aws_ms INTEGER;
             PRAGMA user_version = 5;
             COMMIT;",
        )?;
    }
    if v < 6 {
        // v6: when acting on a capacity decision ended (cooldowns count from there after a restart).
        c.execute_batch(
            "BEGIN IMMEDIATE;
             ALTER TABLE capacity_decisions ADD COLUMN ended_at TEXT;
             PRAGMA user_version = 6;
             COMMIT;",
        )?;
    }
    if v < 7 {
        // v7: the capacity controller's latest evaluation (one row, replaced every interval), so
        // `opsd capacity status` can show what the running daemon decides and why.
        c.execute_batch(
            "BEGIN IMMEDIATE;
             CREATE TABLE IF NOT EXISTS capacity_latest (
               id INTEGER PRIMARY KEY CHECK (id = 1), at TEXT NOT NULL, action TEXT NOT NULL,
               from_capacity REAL NOT NULL, to_capacity REAL NOT NULL, victims TEXT NOT NULL,
               reservation REAL NOT NULL, unplaced INTEGER NOT NULL, reason TEXT NOT NULL,
               outcome TEXT NOT NULL, error TEXT, dry_run INTEGER NOT NULL, ended_at TEXT,
               below_target_since TEXT, scope TEXT NOT NULL);
             PRAGMA user_version = 7;
             COMMIT;",
        )?;
    }
    Ok(())
}

fn create_v1(c: &Connection) -> rusqlite::Result<()> {
    c.execute_batch(
        "BEGIN IMMEDIATE;
         CREATE TABLE IF NOT EXISTS runs (
           id INTEGER PRIMARY KEY AUTOINCREMENT,
           job TEXT NOT NULL, trigger TEXT NOT NULL,
           started_at TEXT NOT NULL, ended_at TEXT,
           outcome TEXT NOT NULL,
           hosts_total INTEGER NOT NULL DEFAULT 0, hosts_ok INTEGER NOT NULL DEFAULT 0,
           hosts_failed INTEGER NOT NULL DEFAULT 0, hosts_skipped INTEGER NOT NULL DEFAULT 0);
         CREATE INDEX IF NOT EXISTS runs_by_job ON runs (job, id);
         CREATE TABLE IF NOT EXISTS hosts (
           run_id INTEGER NOT NULL REFERENCES runs(id), seq INTEGER NOT NULL,
           instance_id TEXT, address TEXT, name TEXT,
           started_at TEXT NOT NULL, ended_at TEXT NOT NULL, status TEXT NOT NULL,
           exit_status INTEGER, error_kind TEXT, error TEXT,
           stdout_dropped INTEGER NOT NULL, stderr_dropped INTEGER NOT NULL,
           PRIMARY KEY (run_id, seq));
         CREATE TABLE IF NOT EXISTS commands (
           run_id INTEGER NOT NULL, seq INTEGER NOT NULL, idx INTEGER NOT NULL,
           command TEXT NOT NULL, exit_status INTEGER, exit_signal TEXT,
           stdout BLOB NOT NULL, stderr BLOB NOT NULL,
           PRIMARY KEY (run_id, seq, idx), FOREIGN KEY (run_id, seq) REFERENCES hosts(run_id, seq));
         CREATE TABLE IF NOT EXISTS host_keys (
           host_id TEXT PRIMARY KEY, address TEXT NOT NULL, key TEXT NOT NULL, pinned_at TEXT NOT NULL);
         PRAGMA user_version = 1;
         COMMIT;",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

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
                        Store::open_blocking(&dir).map(|_| ())
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

    /// catch_up counts from the last firing that ran; the rate anchor from any firing.
    #[tokio::test]
    async fn last_run_firing_skips_skipped_firings() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        let start = RunStart {
            job: "j",
            trigger: "schedule",
            hosts_total: 0,
            started_at: t("2026-11-24T03:00:00Z"),
            scheduled_for: Some(t("2026-11-24T03:00:00Z")),
        };
        let id = store.start_run(start).await.unwrap();
        let end = RunEnd { outcome: "no_hosts", ok: 0, failed: 0, skipped: 0, reason: None };
        store.finish_run(id, end, t("2026-11-24T03:00:01Z")).await.unwrap();
        store.record_firing("j", "schedule", t("2026-11-25T03:00:00Z"), "skipped", "shutdown").await.unwrap();
        assert_eq!(store.last_firing("j").await.unwrap(), Some(t("2026-11-25T03:00:00Z")));
        assert_eq!(store.last_run_firing("j").await.unwrap(), Some(t("2026-11-24T03:00:00Z")));
        assert_eq!(store.last_run_firing("other").await.unwrap(), None);
    }

    /// Pruning deletes old runs with their hosts and commands, old lifecycle actions and capacity
    /// decisions, and keeps what the daemon reads back: each job's latest run, latest firing and
    /// latest firing that ran, runs still `running`, and decisions still `started`.
    #[tokio::test]
    async fn prune_keeps_what_the_daemon_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let now = Utc::now();
        let days = |d: i64| now - chrono::Duration::days(d);
        let run = |job: &'static str, age: i64, scheduled: bool, outcome: Option<&'static str>| {
            let store = store.clone();
            async move {
                let at = days(age);
                let start = RunStart {
                    job,
                    trigger: if scheduled { "schedule" } else { "manual" },
                    hosts_total: 1,
                    started_at: at,
                    scheduled_for: scheduled.then_some(at),
                };
                let id = store.start_run(start).await.unwrap();
                if let Some(outcome) = outcome {
                    let end = RunEnd { outcome, ok: 1, failed: 0, skipped: 0, reason: None };
                    store.finish_run(id, end, at).await.unwrap();
                }
                id
            }
        };
        let a_old = run("a", 40, false, Some("succeeded")).await;
        let a_older_firing = run("a", 39, true, Some("succeeded")).await;
        let a_last_ran = run("a", 38, true, Some("succeeded")).await;
        let a_last_firing = run("a", 37, true, Some("skipped")).await;
        let a_latest = run("a", 1, false, Some("succeeded")).await;
        let b_only = run("b", 50, false, Some("failed")).await;
        let c_running = run("c", 60, false, None).await;
        let c_latest = run("c", 55, false, Some("succeeded")).await;
        store
            .call(move |c| {
                c.execute(
                    "INSERT INTO hosts (run_id, seq, started_at, ended_at, status, stdout_dropped, stderr_dropped)
                     VALUES (?1, 0, '', '', 'ok', 0, 0)",
                    [a_old],
                )?;
                c.execute(
                    "INSERT INTO commands (run_id, seq, idx, command, stdout, stderr) VALUES (?1, 0, 0, 'true', x'', x'')",
                    [a_old],
                )?;
                Ok(())
            })
            .await
            .unwrap();
        let action = |age: i64| ActionRecord {
            message_id: "m".into(),
            group: "g".into(),
            hook: "h".into(),
            instance_id: "i".into(),
            transition: "launch".into(),
            result: "CONTINUE".into(),
            outcome: "completed".into(),
            eni_id: None,
            error: None,
            started_at: days(age),
            ended_at: days(age),
            aws_ms: None,
        };
        store.record_action(action(40)).await.unwrap();
        store.record_action(action(2)).await.unwrap();
        let decision = |age: i64, outcome: &str| DecisionRecord {
            at: days(age),
            action: "hold".into(),
            from_capacity: 1.0,
            to_capacity: 1.0,
            victims: String::new(),
            reservation: 50.0,
            unplaced: 0,
            reason: "r".into(),
            outcome: outcome.into(),
            error: None,
            dry_run: false,
            ended_at: None,
        };
        store.record_decision(decision(41, "held")).await.unwrap();
        store.record_decision(decision(40, "held")).await.unwrap();
        store.record_decision(decision(40, "started")).await.unwrap();
        let acted = |age: i64, action: &str| DecisionRecord { action: action.into(), ..decision(age, "acted") };
        store.record_decision(acted(45, "scale_out")).await.unwrap();
        store.record_decision(acted(44, "scale_out")).await.unwrap();
        store.record_decision(acted(43, "scale_in")).await.unwrap();
        store.record_decision(decision(2, "held")).await.unwrap();

        // One run per call (each holds one host): two calls delete, the third finds nothing.
        let first = store.prune(days(30), 5, 1, true).await.unwrap();
        assert_eq!(first, (Pruned { runs: 1, lifecycle_actions: 1, capacity_decisions: 3 }, true));
        let second = store.prune(days(30), 1, 100, false).await.unwrap();
        assert_eq!(second, (Pruned { runs: 1, ..Pruned::default() }, false));
        assert_eq!(store.prune(days(30), 5, 100, false).await.unwrap(), (Pruned::default(), false));
        let left: Vec<i64> = store
            .call(|c| {
                let mut st = c.prepare("SELECT id FROM runs ORDER BY id")?;
                let ids = st.query_map([], |r| r.get(0))?.collect::<Result<Vec<i64>, _>>()?;
                Ok(ids)
            })
            .await
            .unwrap();
        assert_eq!(left, vec![a_last_ran, a_last_firing, a_latest, b_only, c_running, c_latest]);
        assert!(!left.contains(&a_old) && !left.contains(&a_older_firing));
        let orphans: i64 = store
            .call(move |c| {
                Ok(c.query_row(
                    "SELECT (SELECT COUNT(*) FROM hosts WHERE run_id = ?1) + (SELECT COUNT(*) FROM commands WHERE run_id = ?1)",
                    [a_old],
                    |r| r.get(0),
                )?)
            })
            .await
            .unwrap();
        assert_eq!(orphans, 0);
        // The anchors are unchanged.
        assert_eq!(store.last_firing("a").await.unwrap().map(ts), Some(ts(days(37))));
        assert_eq!(store.last_run_firing("a").await.unwrap().map(ts), Some(ts(days(38))));
        assert_eq!(store.actions(10).await.unwrap().len(), 1);
        // Kept: the newest hold, the one still `started`, and the latest acted scale-out and
        // scale-in (the cooldowns after a restart); the older held and acted ones went.
        let kept: Vec<(String, String)> =
            store.decisions(10).await.unwrap().into_iter().map(|d| (d.action, d.outcome)).collect();
        let want = [("hold", "held"), ("scale_in", "acted"), ("scale_out", "acted"), ("hold", "started")];
        assert_eq!(kept, want.map(|(a, o)| (a.to_string(), o.to_string())).to_vec());
        let mem = crate::capacity::remembered(&store).await;
        assert!(mem.last_scale_out.is_some() && mem.last_scale_in.is_some());
    }
}
