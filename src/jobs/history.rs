//! The jobs wing's records in the store: runs (one row per run, or per firing that started none),
//! each host's result and each command's kept output; the firing times the scheduler reads back
//! (rate anchors, `catch_up`); and retention of old runs.

use super::outcome::{ErrorKind, Host, HostResult, HostStatus, RunOutcome, TriggerKind};
use crate::ssh::CommandResult;
use crate::store::{parse_ts, ts, Migration, Store, StoreError};
use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension};
use serde::Serialize;
use std::sync::Arc;

/// The tables of runs, hosts and commands, and their changes.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        owner: "jobs::history",
        sql: "CREATE TABLE IF NOT EXISTS runs (
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
                PRIMARY KEY (run_id, seq, idx), FOREIGN KEY (run_id, seq) REFERENCES hosts(run_id, seq));",
    },
    // v2: firing times and reasons for the daemon's runs and skipped firings.
    Migration {
        version: 2,
        owner: "jobs::history",
        sql: "ALTER TABLE runs ADD COLUMN scheduled_for TEXT;
              ALTER TABLE runs ADD COLUMN reason TEXT;
              CREATE INDEX IF NOT EXISTS runs_by_job_firing ON runs (job, scheduled_for);",
    },
    // v8: the opsd process recording a run, so a run whose process died is found at the next open.
    Migration { version: 8, owner: "jobs::history", sql: "ALTER TABLE runs ADD COLUMN process TEXT;" },
    // v11: the SHA-256 of the script a run shipped (`[run] script`).
    Migration { version: 11, owner: "jobs::history", sql: "ALTER TABLE runs ADD COLUMN script_sha256 TEXT;" },
];

/// One run as listed by `opsd history`.
#[derive(Debug, Clone, Serialize)]
pub struct RunRecord {
    pub id: i64,
    pub job: String,
    pub trigger: TriggerKind,
    pub started_at: String,
    pub ended_at: Option<String>,
    pub outcome: RunOutcome,
    pub hosts_total: i64,
    pub hosts_ok: i64,
    pub hosts_failed: i64,
    pub hosts_skipped: i64,
    /// The firing time a scheduled run belongs to (before jitter); none for runs by hand.
    pub scheduled_for: Option<String>,
    /// Why a run was skipped or ended in error.
    pub reason: Option<String>,
    /// The SHA-256 (hex) of the script the run shipped to its hosts (`[run] script`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub script_sha256: Option<String>,
}

/// How a run was started.
#[derive(Debug, Clone, Copy)]
pub struct RunStart<'a> {
    pub job: &'a str,
    pub trigger: TriggerKind,
    pub hosts_total: usize,
    pub started_at: DateTime<Utc>,
    pub scheduled_for: Option<DateTime<Utc>>,
    /// The SHA-256 (hex) of the script the run ships.
    pub script_sha256: Option<&'a str>,
}

/// Counts and outcome written when a run ends.
#[derive(Debug, Clone, Copy)]
pub struct RunEnd<'a> {
    pub outcome: RunOutcome,
    pub ok: usize,
    pub failed: usize,
    pub skipped: usize,
    /// Why the run ended this way, when it is not evident from the hosts (AWS error, shutdown).
    pub reason: Option<&'a str>,
}

const RUN_COLUMNS: &str = "id, job, trigger, started_at, ended_at, outcome, hosts_total, hosts_ok, hosts_failed,
    hosts_skipped, scheduled_for, reason, script_sha256";

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
        script_sha256: r.get(12)?,
    })
}

/// The jobs wing's view of the store; cheap to clone.
#[derive(Clone)]
pub struct RunHistory(Store);

impl RunHistory {
    pub fn new(store: Store) -> RunHistory {
        RunHistory(store)
    }

    pub fn store(&self) -> &Store {
        &self.0
    }

    /// Record the start of a run; returns its id.
    pub async fn start_run(&self, start: RunStart<'_>) -> Result<i64, StoreError> {
        let (job, trigger, hosts_total) = (start.job.to_string(), start.trigger, start.hosts_total as i64);
        let (started_at, scheduled_for) = (ts(start.started_at), start.scheduled_for.map(ts));
        let script = start.script_sha256.map(str::to_string);
        self.0
            .call(move |c| {
                c.execute(
                    "INSERT INTO runs (job, trigger, started_at, outcome, hosts_total, scheduled_for, process, script_sha256)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    params![job, trigger, started_at, RunOutcome::Running, hosts_total, scheduled_for, process::me(), script],
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
        trigger: TriggerKind,
        scheduled_for: DateTime<Utc>,
        outcome: RunOutcome,
        reason: &str,
    ) -> Result<i64, StoreError> {
        let (job, reason) = (job.to_string(), reason.to_string());
        let (now, scheduled_for) = (ts(Utc::now()), ts(scheduled_for));
        self.0
            .call(move |c| {
                c.execute(
                    "INSERT INTO runs (job, trigger, started_at, ended_at, outcome, scheduled_for, reason)
                     VALUES (?1, ?2, ?3, ?3, ?4, ?5, ?6)",
                    params![job, trigger, now, outcome, scheduled_for, reason],
                )?;
                Ok(c.last_insert_rowid())
            })
            .await
    }

    /// Record one host's result (and its commands) in one transaction.
    pub async fn record_host(&self, run_id: i64, seq: usize, r: Arc<HostResult>) -> Result<(), StoreError> {
        self.0
            .call(move |c| {
                let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                tx.execute(
                    "INSERT INTO hosts (run_id, seq, instance_id, address, name, started_at, ended_at, status,
                     exit_status, error_kind, error, stdout_dropped, stderr_dropped)
                     VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13)",
                    params![
                        run_id,
                        seq as i64,
                        r.host.instance_id,
                        r.host.address,
                        r.host.name,
                        ts(r.started_at),
                        ts(r.ended_at),
                        r.status,
                        r.exit_status,
                        r.error_kind,
                        r.error,
                        r.stdout_dropped as i64,
                        r.stderr_dropped as i64
                    ],
                )?;
                for (i, cmd) in r.commands.iter().enumerate() {
                    tx.execute(
                        "INSERT INTO commands (run_id, seq, idx, command, exit_status, exit_signal, stdout, stderr)
                         VALUES (?1,?2,?3,?4,?5,?6,?7,?8)",
                        params![
                            run_id,
                            seq as i64,
                            i as i64,
                            cmd.command,
                            cmd.exit_status,
                            cmd.exit_signal,
                            cmd.stdout,
                            cmd.stderr
                        ],
                    )?;
                }
                tx.commit()?;
                Ok(())
            })
            .await
    }

    pub async fn finish_run(&self, run_id: i64, end: RunEnd<'_>, ended_at: DateTime<Utc>) -> Result<(), StoreError> {
        let reason = end.reason.map(str::to_string);
        let (outcome, ok, failed, skipped) = (end.outcome, end.ok as i64, end.failed as i64, end.skipped as i64);
        self.0
            .call(move |c| {
                c.execute(
                    "UPDATE runs SET ended_at = ?2, outcome = ?3, hosts_ok = ?4, hosts_failed = ?5,
                     hosts_skipped = ?6, reason = ?7 WHERE id = ?1",
                    params![run_id, ts(ended_at), outcome, ok, failed, skipped, reason],
                )?;
                Ok(())
            })
            .await
    }

    /// The latest firing time recorded for a job (run or skipped), for `catch_up` and rate anchors.
    pub async fn last_firing(&self, job: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        let job = job.to_string();
        self.0
            .call(move |c| {
                let t: Option<String> =
                    c.query_row("SELECT MAX(scheduled_for) FROM runs WHERE job = ?1", [job], |r| r.get(0))?;
                Ok(t.as_deref().map(parse_ts))
            })
            .await
    }

    /// The latest firing of a job that started a run (not `skipped`): what `catch_up` counts from,
    /// so a firing skipped at shutdown (or by the overlap policy) does not hide one missed while down.
    pub async fn last_run_firing(&self, job: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        let job = job.to_string();
        self.0
            .call(move |c| {
                let t: Option<String> = c.query_row(
                    "SELECT MAX(scheduled_for) FROM runs WHERE job = ?1 AND outcome != ?2",
                    params![job, RunOutcome::Skipped],
                    |r| r.get(0),
                )?;
                Ok(t.as_deref().map(parse_ts))
            })
            .await
    }

    /// Runs left `running` by an opsd process that is gone (`opsd run` killed, or quit by a second
    /// Ctrl-C; a daemon killed) are marked `interrupted`. Runs of live processes, on this host, are
    /// left alone: a process is named by boot, pid and start time, so a reused pid is not mistaken
    /// for it. Called when `opsd run` and the daemon open the store.
    pub async fn interrupt_dead(&self) -> Result<usize, StoreError> {
        self.0
            .call(move |c| {
                let running: Vec<(i64, String)> = c
                    .prepare("SELECT id, process FROM runs WHERE outcome = ?1 AND process IS NOT NULL")?
                    .query_map(params![RunOutcome::Running], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<Result<_, _>>()?;
                let mut n = 0;
                for (id, p) in running.into_iter().filter(|(_, p)| !process::alive(p)) {
                    n += c.execute(
                        "UPDATE runs SET outcome = ?2, ended_at = ?3,
                         reason = 'the opsd process running it ended without recording its end (killed, a second Ctrl-C, a crash)'
                         WHERE id = ?1 AND outcome = ?4",
                        params![id, RunOutcome::Interrupted, ts(Utc::now()), RunOutcome::Running],
                    )?;
                    tracing::warn!(run = id, process = %p, "run {id} was left running by an opsd process that is gone; recorded interrupted");
                }
                Ok(n)
            })
            .await
    }

    /// Scheduled runs left `running` by a daemon that ended without finishing them (killed, power
    /// loss) are marked `interrupted`, so history does not show them running forever. Called by the
    /// daemon at start, while it holds the state directory's daemon lock; runs by hand are left alone.
    pub async fn interrupt_stale(&self) -> Result<usize, StoreError> {
        self.0
            .call(move |c| {
                Ok(c.execute(
                    "UPDATE runs SET outcome = ?2, ended_at = ?1,
                     reason = 'the daemon stopped before the run ended (killed or crashed)'
                     WHERE outcome = ?3 AND trigger != ?4",
                    params![ts(Utc::now()), RunOutcome::Interrupted, RunOutcome::Running, TriggerKind::Manual],
                )?)
            })
            .await
    }

    /// The most recent runs, newest first, optionally of one job.
    pub async fn runs(&self, job: Option<String>, limit: usize) -> Result<Vec<RunRecord>, StoreError> {
        self.0
            .call(move |c| {
                let mut st = c.prepare(&format!(
                    "SELECT {RUN_COLUMNS} FROM runs WHERE (?1 IS NULL OR job = ?1) ORDER BY id DESC LIMIT ?2"
                ))?;
                let rows = st.query_map(params![job, limit as i64], run_row)?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            })
            .await
    }

    /// One run with every host's result and captured output; `None` when no run has that id.
    pub async fn run(&self, id: i64) -> Result<Option<(RunRecord, Vec<HostResult>)>, StoreError> {
        self.0
            .call(move |c| {
                let Some(run) =
                    c.query_row(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?1"), [id], run_row).optional()?
                else {
                    return Ok(None);
                };
                let mut st = c.prepare(
                    "SELECT seq, instance_id, address, name, started_at, ended_at, status, exit_status, error_kind,
                     error, stdout_dropped, stderr_dropped FROM hosts WHERE run_id = ?1 ORDER BY seq",
                )?;
                let mut hosts: Vec<(i64, HostResult)> = st
                    .query_map([id], |r| {
                        Ok((
                            r.get::<_, i64>(0)?,
                            HostResult {
                                host: Host { instance_id: r.get(1)?, address: r.get(2)?, name: r.get(3)? },
                                started_at: parse_ts(&r.get::<_, String>(4)?),
                                ended_at: parse_ts(&r.get::<_, String>(5)?),
                                status: r.get::<_, HostStatus>(6)?,
                                exit_status: r.get(7)?,
                                error_kind: r.get::<_, Option<ErrorKind>>(8)?,
                                error: r.get(9)?,
                                commands: Vec::new(),
                                stdout_dropped: r.get::<_, i64>(10)? as u64,
                                stderr_dropped: r.get::<_, i64>(11)? as u64,
                            },
                        ))
                    })?
                    .collect::<Result<_, _>>()?;
                let mut st = c.prepare(
                    "SELECT seq, command, exit_status, exit_signal, stdout, stderr FROM commands WHERE run_id = ?1
                     ORDER BY seq, idx",
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
                Ok(Some((run, hosts.into_iter().map(|h| h.1).collect())))
            })
            .await
    }

    /// Delete runs older than `cutoff`, one short transaction per call: at most `max_runs` runs
    /// with at most `max_hosts` host records between them (one run at least), with their commands,
    /// so other writers wait milliseconds, not the whole prune. Kept whatever their age: runs still
    /// `running`, each job's latest run, and each job's latest firing and latest firing that ran
    /// (the rate anchors and `catch_up` count from them). Returns how many went and whether older
    /// runs remain (call again).
    pub async fn prune(
        &self,
        cutoff: DateTime<Utc>,
        max_runs: usize,
        max_hosts: i64,
    ) -> Result<(usize, bool), StoreError> {
        let cutoff = ts(cutoff);
        self.0
            .call(move |c| {
                // IMMEDIATE: a deferred transaction that read first could not become a writer once
                // another connection committed (SQLITE_BUSY_SNAPSHOT, which no busy timeout waits out).
                let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                let candidates: Vec<(i64, i64)> = {
                    let mut st = tx.prepare(
                        "SELECT id, hosts_total FROM runs WHERE started_at < ?1 AND outcome != ?3
                         AND id NOT IN (SELECT MAX(id) FROM runs GROUP BY job)
                         AND id NOT IN (SELECT id FROM (SELECT id, MAX(scheduled_for) FROM runs
                                        WHERE scheduled_for IS NOT NULL GROUP BY job))
                         AND id NOT IN (SELECT id FROM (SELECT id, MAX(scheduled_for) FROM runs
                                        WHERE scheduled_for IS NOT NULL AND outcome != ?4 GROUP BY job))
                         ORDER BY id LIMIT ?2",
                    )?;
                    let rows = st.query_map(
                        params![cutoff, max_runs as i64 + 1, RunOutcome::Running, RunOutcome::Skipped],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )?;
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
                let mut deleted = 0;
                {
                    let mut commands = tx.prepare("DELETE FROM commands WHERE run_id = ?1")?;
                    let mut hosts = tx.prepare("DELETE FROM hosts WHERE run_id = ?1")?;
                    let mut runs = tx.prepare("DELETE FROM runs WHERE id = ?1")?;
                    for id in &ids {
                        commands.execute([id])?;
                        hosts.execute([id])?;
                        deleted += runs.execute([id])?;
                    }
                }
                tx.commit()?;
                Ok((deleted, more))
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn open(dir: &std::path::Path) -> RunHistory {
        RunHistory::new(Store::open(dir, crate::schema::MIGRATIONS).await.unwrap())
    }

    /// catch_up counts from the last firing that ran; the rate anchor from any firing.
    #[tokio::test]
    async fn last_run_firing_skips_skipped_firings() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path()).await;
        let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        let start = RunStart {
            job: "j",
            trigger: TriggerKind::Schedule,
            hosts_total: 0,
            started_at: t("2026-11-24T03:00:00Z"),
            scheduled_for: Some(t("2026-11-24T03:00:00Z")),
            script_sha256: None,
        };
        let id = store.start_run(start).await.unwrap();
        let end = RunEnd { outcome: RunOutcome::NoHosts, ok: 0, failed: 0, skipped: 0, reason: None };
        store.finish_run(id, end, t("2026-11-24T03:00:01Z")).await.unwrap();
        store
            .record_firing("j", TriggerKind::Schedule, t("2026-11-25T03:00:00Z"), RunOutcome::Skipped, "shutdown")
            .await
            .unwrap();
        assert_eq!(store.last_firing("j").await.unwrap(), Some(t("2026-11-25T03:00:00Z")));
        assert_eq!(store.last_run_firing("j").await.unwrap(), Some(t("2026-11-24T03:00:00Z")));
        assert_eq!(store.last_run_firing("other").await.unwrap(), None);
    }

    /// Pruning deletes old runs with their hosts and commands, and keeps what the daemon reads
    /// back: each job's latest run, latest firing and latest firing that ran, and runs still `running`.
    #[tokio::test]
    async fn prune_keeps_what_the_daemon_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path()).await;
        let now = Utc::now();
        let days = |d: i64| now - chrono::Duration::days(d);
        let run = |job: &'static str, age: i64, scheduled: bool, outcome: Option<RunOutcome>| {
            let store = store.clone();
            async move {
                let at = days(age);
                let start = RunStart {
                    job,
                    trigger: if scheduled { TriggerKind::Schedule } else { TriggerKind::Manual },
                    hosts_total: 1,
                    started_at: at,
                    scheduled_for: scheduled.then_some(at),
                    script_sha256: None,
                };
                let id = store.start_run(start).await.unwrap();
                if let Some(outcome) = outcome {
                    let end = RunEnd { outcome, ok: 1, failed: 0, skipped: 0, reason: None };
                    store.finish_run(id, end, at).await.unwrap();
                }
                id
            }
        };
        let a_old = run("a", 40, false, Some(RunOutcome::Succeeded)).await;
        let a_older_firing = run("a", 39, true, Some(RunOutcome::Succeeded)).await;
        let a_last_ran = run("a", 38, true, Some(RunOutcome::Succeeded)).await;
        let a_last_firing = run("a", 37, true, Some(RunOutcome::Skipped)).await;
        let a_latest = run("a", 1, false, Some(RunOutcome::Succeeded)).await;
        let b_only = run("b", 50, false, Some(RunOutcome::Failed)).await;
        let c_running = run("c", 60, false, None).await;
        let c_latest = run("c", 55, false, Some(RunOutcome::Succeeded)).await;
        store
            .0
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

        // One run per call (each holds one host): two calls delete, the third finds nothing.
        assert_eq!(store.prune(days(30), 5, 1).await.unwrap(), (1, true));
        assert_eq!(store.prune(days(30), 1, 100).await.unwrap(), (1, false));
        assert_eq!(store.prune(days(30), 5, 100).await.unwrap(), (0, false));
        let left: Vec<i64> = store
            .0
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
            .0
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
    }
}

/// Which process records a run, and whether it still runs.
mod process {
    fn boot() -> String {
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id").map(|s| s.trim().to_string()).unwrap_or_default()
    }

    /// A process's start time (clock ticks since boot: field 22 of /proc/PID/stat).
    fn start(pid: &str) -> Option<String> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat.rsplit_once(')')?.1.split_whitespace().nth(19).map(str::to_string)
    }

    /// This process: `boot:pid:start`.
    pub fn me() -> String {
        let pid = std::process::id().to_string();
        format!("{}:{pid}:{}", boot(), start(&pid).unwrap_or_default())
    }

    /// Whether the process `boot:pid:start` still runs (same boot, same pid, same start time).
    pub fn alive(p: &str) -> bool {
        let mut parts = p.split(':');
        let (Some(b), Some(pid), Some(s)) = (parts.next(), parts.next(), parts.next()) else { return true };
        b == boot() && start(pid).as_deref() == Some(s)
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn this_process_is_alive_and_a_gone_one_is_not() {
            assert!(super::alive(&super::me()));
            let mut child = std::process::Command::new("true").spawn().unwrap();
            let pid = child.id();
            child.wait().unwrap();
            let gone = format!("{}:{pid}:1", super::boot());
            assert!(!super::alive(&gone));
            assert!(!super::alive(&format!(
                "another-boot:{}:{}",
                std::process::id(),
                super::start(&std::process::id().to_string()).unwrap()
            )));
        }
    }
}
