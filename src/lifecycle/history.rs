//! The lifecycle wing's records in the store: one row per lifecycle action worked (table
//! `lifecycle_actions`), what `opsd lifecycle status` lists, and their retention.

use super::message::Transition;
use crate::store::{parse_ts, ts, Migration, Store, StoreError};
use chrono::{DateTime, Utc};
use rusqlite::params;
use serde::Serialize;

pub const MIGRATIONS: &[Migration] = &[
    // v3: lifecycle actions worked by the SQS consumer.
    Migration {
        version: 3,
        owner: "lifecycle::history",
        sql: "CREATE TABLE IF NOT EXISTS lifecycle_actions (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                message_id TEXT NOT NULL, asg TEXT NOT NULL, hook TEXT NOT NULL, instance_id TEXT NOT NULL,
                transition TEXT NOT NULL, result TEXT NOT NULL, outcome TEXT NOT NULL,
                eni_id TEXT, error TEXT, started_at TEXT NOT NULL, ended_at TEXT NOT NULL);
              CREATE INDEX IF NOT EXISTS lifecycle_by_instance ON lifecycle_actions (instance_id);",
    },
    // v5: how much of a lifecycle action was spent in AWS calls.
    Migration {
        version: 5,
        owner: "lifecycle::history",
        sql: "ALTER TABLE lifecycle_actions ADD COLUMN aws_ms INTEGER;",
    },
];

crate::vocabulary! {
    /// What CompleteLifecycleAction was (or would have been) sent.
    pub enum LifecycleResult {
        Continue = "CONTINUE",
        Abandon = "ABANDON",
        /// Nothing was sent: the action was gone before opsd began.
        None = "-",
    }
}

crate::vocabulary! {
    /// How the work on a message ended (recorded for actions; exported for every message).
    pub enum MessageOutcome {
        /// Completed, and the message deleted.
        Completed = "completed",
        /// Completed, but DeleteMessage failed: it returns, and is found done.
        CompletedNotDeleted = "completed_not_deleted",
        /// AWS has no active action for its token any more (completed before, or timed out).
        Expired = "expired",
        /// CompleteLifecycleAction failed: the message stays for redelivery.
        CompleteFailed = "complete_failed",
        /// Stopped by shutdown before completion; the message returns to the queue.
        Interrupted = "interrupted",
        /// The first heartbeat failed for a reason other than the action being gone (access
        /// denied, throttling, no answer): nothing done, the message returns after its lease.
        Unverified = "unverified",
        /// The action's group or hook is not among `[lifecycle] groups` / `hooks`: nothing done,
        /// the message left for the dead-letter queue.
        NotAllowed = "not_allowed",
        /// A test notification, deleted.
        Deleted = "deleted",
        /// Left in the queue (unparsable: for the dead-letter queue; or DeleteMessage failed).
        Kept = "kept",
    }
}

/// One lifecycle action as worked by the consumer.
#[derive(Debug, Clone, Serialize)]
pub struct ActionRecord {
    pub message_id: String,
    pub group: String,
    pub hook: String,
    pub instance_id: String,
    pub transition: Transition,
    pub result: LifecycleResult,
    pub outcome: MessageOutcome,
    pub eni_id: Option<String>,
    pub error: Option<String>,
    pub started_at: DateTime<Utc>,
    pub ended_at: DateTime<Utc>,
    /// Milliseconds of the action spent in AWS calls (the rest is opsd's own work and its waits).
    pub aws_ms: Option<u64>,
}

/// The lifecycle wing's view of the store; cheap to clone.
#[derive(Clone)]
pub struct ActionHistory(Store);

impl ActionHistory {
    pub fn new(store: Store) -> ActionHistory {
        ActionHistory(store)
    }

    pub async fn record(&self, a: ActionRecord) -> Result<(), StoreError> {
        self.0
            .call(move |c| {
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

    /// The most recent lifecycle actions, newest first.
    pub async fn recent(&self, limit: usize) -> Result<Vec<ActionRecord>, StoreError> {
        self.0
            .call(move |c| {
                let mut st = c.prepare(
                    "SELECT message_id, asg, hook, instance_id, transition, result, outcome, eni_id, error,
                     started_at, ended_at, aws_ms FROM lifecycle_actions ORDER BY id DESC LIMIT ?1",
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

    /// Delete the actions that ended before `cutoff`; returns how many went.
    pub async fn prune(&self, cutoff: DateTime<Utc>) -> Result<usize, StoreError> {
        let cutoff = ts(cutoff);
        self.0.call(move |c| Ok(c.execute("DELETE FROM lifecycle_actions WHERE ended_at < ?1", [&cutoff])?)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pruning deletes the actions older than the cutoff and keeps the rest.
    #[tokio::test]
    async fn prune_deletes_old_actions() {
        let dir = tempfile::tempdir().unwrap();
        let history = ActionHistory::new(Store::open(dir.path(), MIGRATIONS).await.unwrap());
        let days = |d: i64| Utc::now() - chrono::Duration::days(d);
        let action = |age: i64| ActionRecord {
            message_id: "m".into(),
            group: "g".into(),
            hook: "h".into(),
            instance_id: "i".into(),
            transition: Transition::Launching,
            result: LifecycleResult::Continue,
            outcome: MessageOutcome::Completed,
            eni_id: None,
            error: None,
            started_at: days(age),
            ended_at: days(age),
            aws_ms: None,
        };
        history.record(action(40)).await.unwrap();
        history.record(action(2)).await.unwrap();
        assert_eq!(history.prune(days(30)).await.unwrap(), 1);
        assert_eq!(history.recent(10).await.unwrap().len(), 1);
    }
}
