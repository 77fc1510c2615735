//! The capacity wing's records in the store: every decision with its outcome
//! (`capacity_decisions`), the controller's latest evaluation (`capacity_latest`, one row, replaced
//! every interval, for `opsd capacity status`), what the controller reads back after a restart
//! (its cooldowns, decisions a crash left `started`), and their retention.

use super::policy::Memory;
use crate::store::{parse_ts, ts, Migration, Store, StoreError};
use chrono::{DateTime, Utc};
use rusqlite::types::{FromSql, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use rusqlite::{params, Row};
use serde::Serialize;

pub const MIGRATIONS: &[Migration] = &[
    // v4: the capacity controller's decisions.
    Migration {
        version: 4,
        owner: "capacity::history",
        sql: "CREATE TABLE IF NOT EXISTS capacity_decisions (
                id INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, action TEXT NOT NULL,
                from_capacity REAL NOT NULL, to_capacity REAL NOT NULL, victims TEXT NOT NULL,
                reservation REAL NOT NULL, unplaced INTEGER NOT NULL, reason TEXT NOT NULL,
                outcome TEXT NOT NULL, error TEXT, dry_run INTEGER NOT NULL);",
    },
    // v6: when acting on a capacity decision ended (cooldowns count from there after a restart).
    Migration {
        version: 6,
        owner: "capacity::history",
        sql: "ALTER TABLE capacity_decisions ADD COLUMN ended_at TEXT;",
    },
    // v7: the capacity controller's latest evaluation (one row, replaced every interval), so
    // `opsd capacity status` can show what the running daemon decides and why.
    Migration {
        version: 7,
        owner: "capacity::history",
        sql: "CREATE TABLE IF NOT EXISTS capacity_latest (
                id INTEGER PRIMARY KEY CHECK (id = 1), at TEXT NOT NULL, action TEXT NOT NULL,
                from_capacity REAL NOT NULL, to_capacity REAL NOT NULL, victims TEXT NOT NULL,
                reservation REAL NOT NULL, unplaced INTEGER NOT NULL, reason TEXT NOT NULL,
                outcome TEXT NOT NULL, error TEXT, dry_run INTEGER NOT NULL, ended_at TEXT,
                below_target_since TEXT, scope TEXT NOT NULL);",
    },
];

crate::vocabulary! {
    /// What a decision does to the fleet.
    pub enum DecisionKind {
        Hold = "hold",
        ScaleOut = "scale_out",
        ScaleIn = "scale_in",
    }
}

crate::vocabulary! {
    /// What came of a decision.
    pub enum DecisionOutcome {
        /// The daemon's latest evaluation (`capacity_latest` only).
        Evaluated = "evaluated",
        /// A hold (recorded at most every few minutes).
        Held = "held",
        /// Decided with `dry_run`: logged and recorded, nothing done.
        DryRun = "dry_run",
        /// Being acted on; left so by a crash until the next start finds it.
        Started = "started",
        Acted = "acted",
        Failed = "failed",
        /// Cut short by opsd stopping; finished (undone) at the next start.
        Interrupted = "interrupted",
        /// Stopped because this replica no longer held the capacity lease (in a cluster): the step
        /// was not taken, and the next leader finishes what it began.
        Fenced = "fenced",
    }
}

impl DecisionOutcome {
    /// Whether acting on the decision is over (the scale-in cooldown counts from its end).
    pub fn ended(self) -> bool {
        self != DecisionOutcome::Started
    }
}

/// A scale-in's victims (EC2 instance ids), stored and shown comma-separated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Victims(pub Vec<String>);

impl Victims {
    pub fn joined(&self) -> String {
        self.0.join(",")
    }
}

impl Serialize for Victims {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.joined())
    }
}

impl ToSql for Victims {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.joined()))
    }
}

impl FromSql for Victims {
    fn column_result(v: ValueRef<'_>) -> FromSqlResult<Self> {
        Ok(Victims(v.as_str()?.split(',').filter(|v| !v.is_empty()).map(String::from).collect()))
    }
}

/// One capacity decision.
#[derive(Debug, Clone, Serialize)]
pub struct DecisionRecord {
    pub at: DateTime<Utc>,
    pub action: DecisionKind,
    pub from_capacity: f64,
    pub to_capacity: f64,
    pub victims: Victims,
    pub reservation: f64,
    pub unplaced: i64,
    pub reason: String,
    pub outcome: DecisionOutcome,
    pub error: Option<String>,
    pub dry_run: bool,
    /// When acting on it ended (the scale-in cooldown counts from here); `None` while `started`.
    pub ended_at: Option<DateTime<Utc>>,
}

/// The capacity controller's latest evaluation ([`DecisionHistory::latest`]).
#[derive(Debug, Clone)]
pub struct CapacityLatest {
    pub decision: DecisionRecord,
    pub below_target_since: Option<DateTime<Utc>>,
    /// The cluster and fleet evaluated, as `Settings::scope` writes them.
    pub scope: String,
}

/// A decision's columns, in the order [`decision_row`] reads them.
const DECISION_COLUMNS: &str =
    "at, action, from_capacity, to_capacity, victims, reservation, unplaced, reason, outcome, error, dry_run, ended_at";

/// A decision's values for [`DECISION_COLUMNS`] (as `?1`…`?12`).
fn decision_values(d: &DecisionRecord) -> [Box<dyn ToSql + '_>; 12] {
    [
        Box::new(ts(d.at)),
        Box::new(d.action),
        Box::new(d.from_capacity),
        Box::new(d.to_capacity),
        Box::new(&d.victims),
        Box::new(d.reservation),
        Box::new(d.unplaced),
        Box::new(&d.reason),
        Box::new(d.outcome),
        Box::new(&d.error),
        Box::new(d.dry_run),
        Box::new(d.ended_at.map(ts)),
    ]
}

/// A decision from column `at` of a row holding [`DECISION_COLUMNS`].
fn decision_row(r: &Row<'_>, at: usize) -> rusqlite::Result<DecisionRecord> {
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

/// The capacity wing's view of the store; cheap to clone.
#[derive(Clone)]
pub struct DecisionHistory(Store);

impl DecisionHistory {
    pub fn new(store: Store) -> DecisionHistory {
        DecisionHistory(store)
    }

    /// Record a decision; returns its id (for [`DecisionHistory::finish`]).
    pub async fn record(&self, d: DecisionRecord) -> Result<i64, StoreError> {
        self.0
            .call(move |c| {
                c.execute(
                    &format!(
                        "INSERT INTO capacity_decisions ({DECISION_COLUMNS}) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12)"
                    ),
                    rusqlite::params_from_iter(decision_values(&d)),
                )?;
                Ok(c.last_insert_rowid())
            })
            .await
    }

    /// The outcome of a decision recorded as `started`.
    pub async fn finish(&self, id: i64, outcome: DecisionOutcome, error: Option<String>) -> Result<(), StoreError> {
        self.0
            .call(move |c| {
                let ended = outcome.ended().then(|| ts(Utc::now()));
                c.execute(
                    "UPDATE capacity_decisions SET outcome = ?2, error = ?3, ended_at = ?4 WHERE id = ?1",
                    params![id, outcome, error, ended],
                )?;
                Ok(())
            })
            .await
    }

    /// Decisions still `started`: opsd stopped while acting on them. Oldest first, with their ids.
    pub async fn unfinished(&self) -> Result<Vec<(i64, DecisionRecord)>, StoreError> {
        self.0
            .call(move |c| {
                let mut st = c.prepare(&format!(
                    "SELECT id, {DECISION_COLUMNS} FROM capacity_decisions WHERE outcome = ?1 ORDER BY id"
                ))?;
                let rows = st.query_map([DecisionOutcome::Started], |r| Ok((r.get(0)?, decision_row(r, 1)?)))?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            })
            .await
    }

    /// The most recent decisions, newest first.
    pub async fn recent(&self, limit: usize) -> Result<Vec<DecisionRecord>, StoreError> {
        self.0
            .call(move |c| {
                let mut st =
                    c.prepare(&format!("SELECT {DECISION_COLUMNS} FROM capacity_decisions ORDER BY id DESC LIMIT ?1"))?;
                let rows = st.query_map([limit as i64], |r| decision_row(r, 0))?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            })
            .await
    }

    /// Replace the controller's latest evaluation of `scope` (its cluster and fleet), with since
    /// when the reservation has been below target (None: it is not).
    pub async fn set_latest(
        &self,
        d: DecisionRecord,
        below_target_since: Option<DateTime<Utc>>,
        scope: String,
    ) -> Result<(), StoreError> {
        self.0
            .call(move |c| {
                let since = below_target_since.map(ts);
                let values = decision_values(&d)
                    .into_iter()
                    .chain([Box::new(since) as Box<dyn ToSql>, Box::new(scope) as Box<dyn ToSql>]);
                c.execute(
                    &format!(
                        "INSERT OR REPLACE INTO capacity_latest (id, {DECISION_COLUMNS}, below_target_since, scope)
                         VALUES (1,?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14)"
                    ),
                    rusqlite::params_from_iter(values),
                )?;
                Ok(())
            })
            .await
    }

    /// The controller's latest evaluation; None before the first.
    pub async fn latest(&self) -> Result<Option<CapacityLatest>, StoreError> {
        self.0
            .call(|c| {
                let mut st = c.prepare(&format!(
                    "SELECT {DECISION_COLUMNS}, below_target_since, scope FROM capacity_latest WHERE id = 1"
                ))?;
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

    /// Cooldowns survive a restart: the last scale-out and scale-in acted on, from the store, on
    /// this process's clock (seconds since start, so an earlier one is negative).
    pub async fn memory(&self) -> Memory {
        let mut mem = Memory::default();
        let decisions = match self.recent(200).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!("capacity: cannot read the last decisions, so no cooldown is remembered: {e}");
                return mem;
            }
        };
        let now = Utc::now();
        let ago = |at: DateTime<Utc>| -((now - at).num_milliseconds() as f64 / 1000.0);
        use DecisionOutcome::{Acted, Failed, Interrupted, Started};
        for d in decisions.iter().filter(|d| matches!(d.outcome, Acted | Failed | Started | Interrupted)) {
            match d.action {
                DecisionKind::ScaleOut if mem.last_scale_out.is_none() && d.outcome == Acted => {
                    mem.last_scale_out = Some(ago(d.at))
                }
                // From when acting on it ended, as the running controller counts it (a drain can be long).
                DecisionKind::ScaleIn if mem.last_scale_in.is_none() => {
                    mem.last_scale_in = Some(ago(d.ended_at.unwrap_or(d.at)))
                }
                _ => {}
            }
        }
        mem
    }

    /// Delete decisions older than `cutoff`, but not those still `started` nor the latest of each
    /// action and outcome (the cooldowns are read back from them after a restart). Returns how many went.
    pub async fn prune(&self, cutoff: DateTime<Utc>) -> Result<usize, StoreError> {
        let cutoff = ts(cutoff);
        self.0
            .call(move |c| {
                Ok(c.execute(
                    "DELETE FROM capacity_decisions WHERE at < ?1 AND outcome != ?2
                     AND id NOT IN (SELECT MAX(id) FROM capacity_decisions GROUP BY action, outcome)",
                    params![cutoff, DecisionOutcome::Started],
                )?)
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn open(dir: &std::path::Path) -> DecisionHistory {
        DecisionHistory::new(Store::open(dir, MIGRATIONS).await.unwrap())
    }

    fn decision(at: DateTime<Utc>, action: DecisionKind, outcome: DecisionOutcome) -> DecisionRecord {
        DecisionRecord {
            at,
            action,
            from_capacity: 1.0,
            to_capacity: 1.0,
            victims: Victims::default(),
            reservation: 50.0,
            unplaced: 0,
            reason: "r".into(),
            outcome,
            error: None,
            dry_run: false,
            ended_at: None,
        }
    }

    /// After a restart the scale-in cooldown counts from when the last scale-in ended (its drain may
    /// have taken minutes), as the running controller counts it, not from when it was decided.
    #[tokio::test]
    async fn the_scale_in_cooldown_counts_from_the_end_of_the_action() {
        let dir = tempfile::tempdir().unwrap();
        let history = open(dir.path()).await;
        let decided = Utc::now() - chrono::Duration::seconds(600);
        let d = DecisionRecord {
            from_capacity: 4.0,
            to_capacity: 2.0,
            victims: Victims(vec!["i-1".into(), "i-2".into()]),
            reservation: 30.0,
            reason: "test".into(),
            ..decision(decided, DecisionKind::ScaleIn, DecisionOutcome::Started)
        };
        let id = history.record(d).await.unwrap();
        // Still started (a crash mid-drain): from the decision.
        let since = -history.memory().await.last_scale_in.unwrap();
        assert!((595.0..700.0).contains(&since), "{since}");
        history.finish(id, DecisionOutcome::Acted, None).await.unwrap();
        let since = -history.memory().await.last_scale_in.unwrap();
        assert!((0.0..60.0).contains(&since), "{since}");
        assert!(history.unfinished().await.unwrap().is_empty());
        // The victims come back as they went in.
        let back = history.recent(1).await.unwrap().remove(0);
        assert_eq!(back.victims.0, ["i-1", "i-2"]);
        assert_eq!(serde_json::to_value(&back).unwrap()["victims"], "i-1,i-2");
    }

    /// Pruning deletes old decisions, and keeps the newest of each action and outcome (the
    /// cooldowns after a restart) and the ones still `started`.
    #[tokio::test]
    async fn prune_keeps_what_the_controller_reads_back() {
        use DecisionKind::*;
        use DecisionOutcome::*;
        let dir = tempfile::tempdir().unwrap();
        let history = open(dir.path()).await;
        let days = |d: i64| Utc::now() - chrono::Duration::days(d);
        for (age, action, outcome) in [
            (41, Hold, Held),
            (40, Hold, Held),
            (40, Hold, Started),
            (45, ScaleOut, Acted),
            (44, ScaleOut, Acted),
            (43, ScaleIn, Acted),
            (2, Hold, Held),
        ] {
            history.record(decision(days(age), action, outcome)).await.unwrap();
        }
        assert_eq!(history.prune(days(30)).await.unwrap(), 3);
        // Kept: the newest hold, the one still `started`, and the latest acted scale-out and
        // scale-in (the cooldowns after a restart); the older held and acted ones went.
        let kept: Vec<(DecisionKind, DecisionOutcome)> =
            history.recent(10).await.unwrap().into_iter().map(|d| (d.action, d.outcome)).collect();
        assert_eq!(kept, [(Hold, Held), (ScaleIn, Acted), (ScaleOut, Acted), (Hold, Started)]);
        let mem = history.memory().await;
        assert!(mem.last_scale_out.is_some() && mem.last_scale_in.is_some());
    }
}
