//! Membership: every replica writes a heartbeat item (`pk = "member"`, `sk = <replica>`) with a
//! counter that grows at each beat, and reads the others'. A member is dead when its counter has
//! not changed for `member_timeout` **on the observer's own monotonic clock**, as
//! amazon-dynamodb-lock-client judges a lock: no replica compares its wall clock with another's.

use super::table::{get_n, get_s, n, s, Item, Table, TableError, EXPIRES, PK, SK};
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
    /// Random per process start: claims of an earlier incarnation of a replica are abandoned.
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

/// A member's incarnation and heartbeat counter as last read.
type Beat = (String, u64);

/// Which members are alive, as this replica has seen their heartbeats move.
#[derive(Debug)]
pub struct Liveness {
    timeout: Duration,
    /// Replica → (its beat when last seen changing, when that was on this replica's clock).
    seen: Mutex<HashMap<String, (Beat, Instant)>>,
}

impl Liveness {
    pub fn new(timeout: Duration) -> Liveness {
        Liveness { timeout, seen: Mutex::new(HashMap::new()) }
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Take in the members' items as read now.
    pub fn observe(&self, members: &[Member]) {
        let now = Instant::now();
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        for m in members {
            let now_seen = (m.incarnation.clone(), m.beat);
            match seen.get(&m.replica) {
                Some((last, _)) if *last == now_seen => {}
                _ => {
                    seen.insert(m.replica.clone(), (now_seen, now));
                }
            }
        }
    }

    /// Every member seen, with its incarnation and whether it is dead: when this changes, work some
    /// member held may have been abandoned.
    pub fn picture(&self) -> std::collections::BTreeSet<(String, String, bool)> {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.iter().map(|(r, ((inc, _), since))| (r.clone(), inc.clone(), since.elapsed() >= self.timeout)).collect()
    }

    /// The incarnation `replica` last heartbeat with, if it has been seen.
    pub fn incarnation(&self, replica: &str) -> Option<String> {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.get(replica).map(|((inc, _), _)| inc.clone())
    }

    /// Whether `replica`'s heartbeat has stood still for the timeout. A replica never seen counts as
    /// dead only once this replica has watched for a whole timeout (its item may just be missing).
    pub fn is_dead(&self, replica: &str, watching_since: Instant) -> bool {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        match seen.get(replica) {
            Some((_, since)) => since.elapsed() >= self.timeout,
            None => watching_since.elapsed() >= self.timeout,
        }
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

/// Write the first heartbeat: opsd starts only once the table answers (it names the fix when not).
pub async fn join(table: &Table, me: &Me) -> Result<(), TableError> {
    table.check().await?;
    table.put(item(me, 0)).await
}

/// Beat every `every` and watch the others until `stop`; then leave (delete this replica's item).
pub async fn heartbeat(
    table: Table,
    me: Me,
    every: Duration,
    liveness: std::sync::Arc<Liveness>,
    stop: CancellationToken,
) {
    let mut beat = 0u64;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.cancelled() => break,
        }
        beat += 1;
        if let Err(e) = table.put(item(&me, beat)).await {
            tracing::warn!(replica = %me.replica, "cluster: heartbeat: {e}");
        }
        match list(&table).await {
            Ok(members) => liveness.observe(&members),
            Err(e) => tracing::warn!(replica = %me.replica, "cluster: reading the members: {e}"),
        }
    }
    if let Err(e) = table.delete(PARTITION, &me.replica).await {
        tracing::warn!(replica = %me.replica, "cluster: leaving: {e}");
    }
}
