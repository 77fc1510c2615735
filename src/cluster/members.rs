//! Membership: every replica writes a heartbeat item (`pk = "member"`, `sk = <replica>`) with a
//! counter that grows at each beat and the incarnation (random per start) it runs, and reads the
//! others'. A member is dead when its counter stood still across this replica's own successful
//! reads at least `member_timeout` apart **on this replica's monotonic clock**, as
//! amazon-dynamodb-lock-client judges a lock: no replica compares its wall clock with another's,
//! and a replica that could not read the table (paused, cut off) judges nobody from stale reads.

use super::table::{get_n, get_s, n, s, Item, Table, TableError, Written, EXPIRES, PK, SK};
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub const PARTITION: &str = "member";
/// A member item outlives its last beat by this long (TTL), so `opsd cluster status` shows a replica
/// that stopped for a day, then forgets it.
const KEEP_AFTER_LAST_BEAT: Duration = Duration::from_secs(86400);

/// A member as its heartbeat item says.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Member {
    pub replica: String,
    pub host: String,
    pub version: String,
    pub started_at: String,
    /// Grows by one at every heartbeat.
    pub beat: u64,
    /// When the member wrote its last heartbeat, by its own clock (shown, never compared).
    pub beat_at: String,
    /// Random per process start: work an earlier incarnation of a replica held is abandoned.
    pub incarnation: String,
}

impl Member {
    fn from_item(item: &Item) -> Option<Member> {
        Some(Member {
            replica: get_s(item, SK)?.to_string(),
            host: get_s(item, "host").unwrap_or_default().to_string(),
            version: get_s(item, "version").unwrap_or_default().to_string(),
            started_at: get_s(item, "started_at").unwrap_or_default().to_string(),
            beat: get_n(item, "beat").unwrap_or(0),
            beat_at: get_s(item, "beat_at").unwrap_or_default().to_string(),
            incarnation: get_s(item, "incarnation").unwrap_or_default().to_string(),
        })
    }
}

/// Every member of the cluster, as their items say.
pub async fn list(table: &Table) -> Result<Vec<Member>, TableError> {
    let items = table.query(PARTITION, "", 10_000).await?;
    let mut members: Vec<Member> = items.iter().filter_map(Member::from_item).collect();
    members.sort_by(|a, b| a.replica.cmp(&b.replica));
    Ok(members)
}

/// One member's item, read consistently now (None: it left, or was never there).
pub async fn get(table: &Table, replica: &str) -> Result<Option<Member>, TableError> {
    Ok(table.get(PARTITION, replica).await?.as_ref().and_then(Member::from_item))
}

/// A member's incarnation and heartbeat counter as read.
type Beat = (String, u64);

#[derive(Debug, Default)]
struct Seen {
    /// Replica → (its beat, and when this replica first read it, on its own clock).
    beats: HashMap<String, (Beat, Instant)>,
    /// When this replica last read the members successfully.
    last_read: Option<Instant>,
}

/// Which members are alive, as this replica has seen their heartbeats move.
#[derive(Debug)]
pub struct Liveness {
    timeout: Duration,
    seen: Mutex<Seen>,
}

impl Liveness {
    pub fn new(timeout: Duration) -> Liveness {
        Liveness { timeout, seen: Mutex::new(Seen::default()) }
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Take in the members' items, as read successfully just now.
    pub fn observe(&self, members: &[Member]) {
        let now = Instant::now();
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        for m in members {
            let beat = (m.incarnation.clone(), m.beat);
            match seen.beats.get(&m.replica) {
                Some((last, _)) if *last == beat => {}
                _ => {
                    seen.beats.insert(m.replica.clone(), (beat, now));
                }
            }
        }
        seen.last_read = Some(now);
    }

    /// Whether `replica`, in `incarnation`, is dead: this replica has read its heartbeat standing
    /// still (that incarnation, that counter) over at least the timeout. Never from reads older
    /// than the beat's first sighting, so a replica that could not read judges nobody.
    pub fn is_dead(&self, replica: &str, incarnation: &str) -> bool {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        match (seen.beats.get(replica), seen.last_read) {
            (Some(((inc, _), since)), Some(read)) if inc == incarnation => read.duration_since(*since) >= self.timeout,
            _ => false,
        }
    }

    /// When this replica last read the members successfully.
    pub fn last_read(&self) -> Option<Instant> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).last_read
    }
}

/// What this replica writes about itself.
#[derive(Debug, Clone)]
pub struct Me {
    pub replica: String,
    /// Random, new at every start.
    pub incarnation: String,
    pub host: String,
    pub started_at: DateTime<Utc>,
}

fn item(me: &Me, beat: u64) -> Item {
    let now = Utc::now();
    let expires = now.timestamp() + KEEP_AFTER_LAST_BEAT.as_secs() as i64;
    Item::from([
        (PK.to_string(), s(PARTITION)),
        (SK.to_string(), s(&me.replica)),
        ("host".into(), s(&me.host)),
        ("version".into(), s(env!("CARGO_PKG_VERSION"))),
        ("started_at".into(), s(me.started_at.to_rfc3339())),
        ("beat".into(), n(beat)),
        ("beat_at".into(), s(now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))),
        ("incarnation".into(), s(&me.incarnation)),
        (EXPIRES.into(), n(expires)),
    ])
}

#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error(transparent)]
    Table(#[from] TableError),
    #[error("another opsd daemon runs as replica {0} (its heartbeat moves); give each daemon its own [cluster] replica (or OPSD_CLUSTER__REPLICA)")]
    NameTaken(String),
}

/// Join: the table must answer (the error names the fix when not), and no live daemon may use this
/// replica's name. A heartbeat item of another incarnation that stands still for two heartbeats is
/// an earlier run of this replica that died: it is replaced.
pub async fn join(table: &Table, me: &Me, every: Duration) -> Result<(), JoinError> {
    table.check().await?;
    if let Some(before) = get(table, &me.replica).await? {
        tokio::time::sleep(every * 2).await;
        if let Some(after) = get(table, &me.replica).await? {
            if after.incarnation != me.incarnation
                && (after.beat != before.beat || after.incarnation != before.incarnation)
            {
                return Err(JoinError::NameTaken(me.replica.clone()));
            }
        }
    }
    table.put(item(me, 0)).await?;
    Ok(())
}

/// Beat every `every` and read the others, until `stop`; then leave (delete this replica's item).
/// A beat is a write retried for at most a third of the member timeout (a late beat is skipped, not
/// queued); `beaten` learns of each one that landed, so the replica knows how long it has gone unheard.
pub async fn heartbeat(
    table: Table,
    me: Me,
    every: Duration,
    liveness: std::sync::Arc<Liveness>,
    beaten: std::sync::Arc<Mutex<Instant>>,
    stop: CancellationToken,
) {
    let mut beat = 0u64;
    let mine = [(":me", s(&me.incarnation))];
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.cancelled() => break,
        }
        beat += 1;
        let written =
            table.put_quick(item(&me, beat), Some("attribute_not_exists(pk) OR incarnation = :me"), &mine, every).await;
        match written {
            Ok(Written::Done) => *beaten.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now(),
            Ok(Written::Refused(_)) => {
                tracing::error!(replica = %me.replica, "cluster: another opsd daemon writes this replica's heartbeat; give each daemon its own [cluster] replica")
            }
            Err(e) => tracing::warn!(replica = %me.replica, "cluster: heartbeat: {e}"),
        }
        match tokio::time::timeout(every, list(&table)).await {
            Ok(Ok(members)) => liveness.observe(&members),
            Ok(Err(e)) => tracing::warn!(replica = %me.replica, "cluster: reading the members: {e}"),
            Err(_) => tracing::warn!(replica = %me.replica, "cluster: reading the members took longer than {every:?}"),
        }
    }
    if let Err(e) = table.delete(PARTITION, &me.replica).await {
        tracing::warn!(replica = %me.replica, "cluster: leaving: {e}");
    }
}
