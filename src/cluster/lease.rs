//! Leases: one replica at a time holds a named lease (`pk = "lease"`, `sk = <name>`, e.g.
//! `capacity#<scope>`) and may act for it; every write it makes under the lease is conditional on
//! the lease's **epoch** (the fencing token), so a holder that was paused past its lease and wakes
//! up is refused by DynamoDB, not trusted to notice.
//!
//! The item: `holder` (a replica, empty once released), `incarnation`, `epoch` (grows by one at
//! every change of holder; the item is never deleted, so an epoch never repeats), `version`
//! (random, new at every write) and what the holder's wing keeps there (the capacity wing's
//! journal). As amazon-dynamodb-lock-client does, and for the reasons its issues give:
//! - **Takeover after a crash** is judged on the taker's own monotonic clock: a replica takes the
//!   lease over only once it has read the same `version` for a whole lease, then with a write
//!   conditional on that version (so of two takers one wins, and a holder's renewal in between
//!   makes both lose). No wall clock is compared between replicas, so clock skew changes nothing.
//! - **Renewal** (every third of the lease) is a write conditional on holder, incarnation and epoch.
//! - **The holder stops before its lease ends**, by its own clock: its deadline is when it *sent*
//!   its last successful write plus the lease less a margin (a fifth). Every taker's wait began
//!   after that write landed, so the holder's deadline passes before any taker may take over.
//! - **Fencing**: the lock client leaves fencing to its users (its issue on stale holders); here
//!   each act step is preceded by a write conditional on the epoch ([`Lease::fence`]).
//!
//! A lease released at a clean stop passes at once; one whose holder crashed passes after a lease.

use super::table::{get_n, get_s, n, s, Item, Table, TableError, Update, Written, PK, SK};
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::Utc;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub const PARTITION: &str = "lease";

/// Why a holder may not act.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Fenced {
    #[error("this replica does not hold the lease {0}; another replica leads")]
    NotHeld(String),
    #[error("the lease {name} (epoch {epoch}) was not renewed in time, so this replica stopped acting before it could pass to another")]
    Expired { name: String, epoch: u64 },
    #[error(
        "the lease {name} passed from this replica (epoch {epoch}) to {holder} (epoch {now}); its write was refused"
    )]
    Lost { name: String, epoch: u64, holder: String, now: u64 },
    #[error(
        "the lease {name} (epoch {epoch}) could not be confirmed ({error}); nothing done, tried again at the next step"
    )]
    Unconfirmed { name: String, epoch: u64, error: String },
}

/// What this replica holds: the epoch, when its last confirmed write was sent, and when it must
/// stop acting (its own monotonic clock).
#[derive(Debug, Clone, Copy)]
struct Holding {
    epoch: u64,
    sent: Instant,
    deadline: Instant,
}

/// How soon a renewal that failed is tried again (the next regular one would come too late).
const RENEW_RETRY: Duration = Duration::from_millis(250);

/// A lease as a holder's item says (for `opsd cluster status`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Holder {
    pub name: String,
    /// Empty when released.
    pub holder: String,
    pub epoch: u64,
    /// When the holder last wrote it, by its own clock (shown, never compared).
    pub renewed_at: String,
}

/// Every lease of the cluster, as their items say.
pub async fn list(table: &Table) -> Result<Vec<Holder>, TableError> {
    let items = table.query(PARTITION, "", 1000).await?;
    Ok(items
        .iter()
        .map(|i| Holder {
            name: get_s(i, SK).unwrap_or_default().to_string(),
            holder: get_s(i, "holder").unwrap_or_default().to_string(),
            epoch: get_n(i, "epoch").unwrap_or(0),
            renewed_at: get_s(i, "renewed_at").unwrap_or_default().to_string(),
        })
        .collect())
}

pub struct Lease {
    table: Table,
    name: String,
    replica: String,
    incarnation: String,
    duration: Duration,
    held: Mutex<Option<Holding>>,
}

impl Lease {
    pub fn new(table: Table, name: &str, replica: &str, incarnation: &str, duration: Duration) -> Lease {
        Lease {
            table,
            name: name.to_string(),
            replica: replica.to_string(),
            incarnation: incarnation.to_string(),
            duration,
            held: Mutex::new(None),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn holding(&self) -> Option<Holding> {
        *self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set(&self, h: Option<Holding>) {
        *self.held.lock().unwrap_or_else(|p| p.into_inner()) = h;
    }

    /// The deadline a write sent at `sent` gives.
    fn deadline(&self, sent: Instant) -> Instant {
        sent + self.duration - self.duration / 5
    }

    /// The epoch this replica leads in, if it holds the lease and its deadline has not passed.
    pub fn leading(&self) -> Option<u64> {
        self.check().ok()
    }

    /// How long this replica may still act (its deadline less now), or why it may not.
    pub fn remaining(&self) -> Result<Duration, Fenced> {
        self.check()?;
        let h = self.holding().ok_or_else(|| Fenced::NotHeld(self.name.clone()))?;
        Ok(h.deadline.saturating_duration_since(Instant::now()))
    }

    /// Why a step that did not end before the deadline was cut short.
    pub fn ran_out(&self) -> Fenced {
        self.check().err().unwrap_or_else(|| {
            let epoch = self.holding().map(|h| h.epoch).unwrap_or(0);
            Fenced::Expired { name: self.name.clone(), epoch }
        })
    }

    /// Whether this replica may act now, by its own clock only (no I/O): the epoch it leads in.
    pub fn check(&self) -> Result<u64, Fenced> {
        match self.holding() {
            None => Err(Fenced::NotHeld(self.name.clone())),
            Some(h) if Instant::now() >= h.deadline => Err(Fenced::Expired { name: self.name.clone(), epoch: h.epoch }),
            Some(h) => Ok(h.epoch),
        }
    }

    /// A write conditional on this replica still holding the lease in its epoch, which also renews
    /// it: `set` are `(attribute, value)` pairs the holder's wing keeps on the item, `remove` names
    /// attributes to drop. Refused (another replica took over), or unanswered before the deadline:
    /// [`Fenced`], and the caller does not act.
    pub async fn fence(&self, set: &[(&str, AttributeValue)], remove: &[&str]) -> Result<u64, Fenced> {
        let epoch = self.check()?;
        let limit = self.holding().map(|h| h.deadline.saturating_duration_since(Instant::now())).unwrap_or_default();
        self.write(epoch, set, remove, limit).await
    }

    /// Renew the lease held in `epoch`, even past this replica's deadline: the write is conditional
    /// on the epoch, so if it lands nobody has taken over (a taker's write, conditional on the
    /// version this one changes, now fails), and this replica may act again.
    async fn renew(&self, epoch: u64) -> Result<u64, Fenced> {
        self.write(epoch, &[], &[], self.duration / 3).await
    }

    /// The conditional write of [`Lease::fence`] and [`Lease::renew`], within `limit`.
    async fn write(
        &self,
        epoch: u64,
        set: &[(&str, AttributeValue)],
        remove: &[&str],
        limit: Duration,
    ) -> Result<u64, Fenced> {
        let mut values: Vec<(String, AttributeValue)> = vec![
            (":version".into(), s(super::incarnation())),
            (":at".into(), s(now())),
            (":me".into(), s(&self.replica)),
            (":inc".into(), s(&self.incarnation)),
            (":epoch".into(), n(epoch)),
        ];
        let mut names: Vec<(String, String)> = Vec::new();
        let mut sets = vec!["version = :version".to_string(), "renewed_at = :at".to_string()];
        for (i, (attr, v)) in set.iter().enumerate() {
            names.push((format!("#s{i}"), attr.to_string()));
            values.push((format!(":s{i}"), v.clone()));
            sets.push(format!("#s{i} = :s{i}"));
        }
        let mut update = format!("SET {}", sets.join(", "));
        if !remove.is_empty() {
            let removed: Vec<String> = (0..remove.len()).map(|i| format!("#r{i}")).collect();
            names.extend(remove.iter().enumerate().map(|(i, attr)| (format!("#r{i}"), attr.to_string())));
            update.push_str(&format!(" REMOVE {}", removed.join(", ")));
        }
        let values: Vec<(&str, AttributeValue)> = values.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        let names: Vec<(&str, &str)> = names.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let sent = Instant::now();
        let condition = "holder = :me AND incarnation = :inc AND epoch = :epoch";
        let call = Update {
            pk: PARTITION,
            sk: &self.name,
            update: &update,
            condition: Some(condition),
            values: &values,
            names: &names,
        };
        let r = self.table.update_quick(call, limit).await;
        match r {
            Ok(Written::Done) => {
                // Unless the lease was lost meanwhile (a refusal seen by another step): then this
                // write is not trusted either. Deadlines only move forward (an earlier write that
                // answers last must not shorten them).
                let mut h = self.held.lock().unwrap_or_else(|p| p.into_inner());
                match h.as_mut() {
                    Some(h) if h.epoch == epoch => {
                        if sent > h.sent {
                            h.sent = sent;
                            h.deadline = self.deadline(sent);
                        }
                        Ok(epoch)
                    }
                    _ => Err(Fenced::NotHeld(self.name.clone())),
                }
            }
            Ok(Written::Refused(item)) => {
                let (holder, now) = item
                    .as_ref()
                    .map(|i| (get_s(i, "holder").unwrap_or_default().to_string(), get_n(i, "epoch").unwrap_or(0)))
                    .unwrap_or_default();
                let mut h = self.held.lock().unwrap_or_else(|p| p.into_inner());
                if h.is_some_and(|h| h.epoch == epoch) {
                    *h = None;
                }
                Err(Fenced::Lost { name: self.name.clone(), epoch, holder, now })
            }
            Err(e) => Err(Fenced::Unconfirmed { name: self.name.clone(), epoch, error: e.to_string() }),
        }
    }

    /// The lease's item as it is now (the holder's wing reads what an earlier holder left there).
    pub async fn item(&self) -> Result<Option<Item>, TableError> {
        self.table.get(PARTITION, &self.name).await
    }

    /// Hold the lease when it is free, or once its holder has stopped renewing it for a whole
    /// lease, and renew it while held (a third of a lease after the last confirmed write; a failed
    /// renewal is tried again at once), until one of:
    /// - `done`: what acts under the lease has ended (a clean stop, or it failed): the lease is
    ///   released, so the next holder need not wait;
    /// - `stop`: the daemon is gone while that may still be acting: not released; it runs out.
    ///
    /// Once `no_more` is cancelled (the daemon is stopping) a lease not held is not taken. A holding
    /// whose every write has gone unconfirmed for a lease past its deadline is dropped, so the lease
    /// can pass (to this replica again, or another) rather than be renewed blindly for ever.
    pub async fn campaign(&self, done: CancellationToken, no_more: CancellationToken, stop: CancellationToken) {
        let mut watch: Option<(String, Instant)> = None;
        let mut failed = false;
        loop {
            let wait = match self.holding() {
                Some(_) if failed => RENEW_RETRY,
                Some(h) => (h.sent + self.duration / 3).saturating_duration_since(Instant::now()),
                None => self.duration / 6,
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = done.cancelled() => {
                    self.release().await;
                    return;
                }
                _ = stop.cancelled() => return,
            }
            if let Some(h) = self.holding() {
                if Instant::now() >= h.deadline + self.duration {
                    tracing::warn!(lease = %self.name, epoch = h.epoch, "cluster: no write to the lease confirmed for a lease past its deadline; giving it up");
                    self.set(None);
                    continue;
                }
                let r = self.renew(h.epoch).await;
                failed = r.is_err();
                match r {
                    Ok(_) => {}
                    Err(e @ Fenced::Lost { .. }) => tracing::warn!(lease = %self.name, "cluster: {e}"),
                    Err(e) => tracing::warn!(lease = %self.name, "cluster: renewing: {e}"),
                }
                continue;
            }
            failed = false;
            if no_more.is_cancelled() {
                continue;
            }
            match self.try_take(&mut watch).await {
                Ok(Some(epoch)) => {
                    tracing::info!(lease = %self.name, epoch, replica = %self.replica, "cluster: took the lease")
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(lease = %self.name, "cluster: trying to take the lease: {e}"),
            }
        }
    }

    /// One look at the lease: take it if it is free or its holder has been silent for a whole lease
    /// (`watch`: the version last read and when it was first read, on this replica's clock).
    async fn try_take(&self, watch: &mut Option<(String, Instant)>) -> Result<Option<u64>, TableError> {
        let item = self.table.get_quick(PARTITION, &self.name, self.duration / 6).await?;
        let sent = Instant::now();
        let mine = [
            (":me", s(&self.replica)),
            (":inc", s(&self.incarnation)),
            (":version", s(super::incarnation())),
            (":at", s(now())),
        ];
        let Some(item) = item else {
            let fresh = Item::from([
                (PK.to_string(), s(PARTITION)),
                (SK.to_string(), s(&self.name)),
                ("holder".into(), mine[0].1.clone()),
                ("incarnation".into(), mine[1].1.clone()),
                ("epoch".into(), n(1)),
                ("version".into(), mine[2].1.clone()),
                ("renewed_at".into(), mine[3].1.clone()),
            ]);
            let limit = self.duration / 3;
            return Ok(match self.table.put_quick(fresh, Some("attribute_not_exists(pk)"), &[], limit).await? {
                Written::Done => self.took(1, sent),
                // A retry refused because the first attempt landed (its answer lost) is still ours.
                Written::Refused(Some(there)) if self.wrote(&there, &mine[2].1) => self.took(1, sent),
                Written::Refused(_) => None,
            });
        };
        let version = get_s(&item, "version").unwrap_or_default().to_string();
        let epoch: u64 = get_n(&item, "epoch").unwrap_or(0);
        let free = get_s(&item, "holder").unwrap_or_default().is_empty();
        let silent = match watch {
            Some((v, since)) if *v == version => since.elapsed() >= self.duration,
            _ => {
                *watch = Some((version.clone(), Instant::now()));
                false
            }
        };
        if !free && !silent {
            return Ok(None);
        }
        let mut values = mine.to_vec();
        values.push((":seen", s(&version)));
        values.push((":one", n(1)));
        let update = "SET holder = :me, incarnation = :inc, version = :version, renewed_at = :at, epoch = epoch + :one";
        let call = Update {
            pk: PARTITION,
            sk: &self.name,
            update,
            condition: Some("version = :seen"),
            values: &values,
            names: &[],
        };
        Ok(match self.table.update_quick(call, self.duration / 3).await? {
            Written::Done => {
                *watch = None;
                self.took(epoch + 1, sent)
            }
            Written::Refused(Some(there)) if self.wrote(&there, &mine[2].1) => {
                *watch = None;
                self.took(epoch + 1, sent)
            }
            Written::Refused(_) => None,
        })
    }

    /// Whether `item` is this replica's own write of `version` (a write that landed, whose retry
    /// was refused because it had).
    fn wrote(&self, item: &Item, version: &AttributeValue) -> bool {
        get_s(item, "holder") == Some(self.replica.as_str())
            && get_s(item, "incarnation") == Some(self.incarnation.as_str())
            && item.get("version") == Some(version)
    }

    fn took(&self, epoch: u64, sent: Instant) -> Option<u64> {
        self.set(Some(Holding { epoch, sent, deadline: self.deadline(sent) }));
        Some(epoch)
    }

    /// Give the lease up (at a clean stop: the next holder need not wait a lease). Within a few
    /// seconds; not held any more is fine.
    async fn release(&self) {
        let Some(h) = self.holding() else { return };
        self.set(None);
        let values = [
            (":me", s(&self.replica)),
            (":inc", s(&self.incarnation)),
            (":epoch", n(h.epoch)),
            (":version", s(super::incarnation())),
            (":at", s(now())),
            (":none", s("")),
        ];
        let r = self
            .table
            .update_quick(
                Update {
                    pk: PARTITION,
                    sk: &self.name,
                    update: "SET holder = :none, version = :version, renewed_at = :at",
                    condition: Some("holder = :me AND incarnation = :inc AND epoch = :epoch"),
                    values: &values,
                    names: &[],
                },
                Duration::from_secs(5),
            )
            .await;
        match r {
            Ok(Written::Done) => tracing::info!(lease = %self.name, epoch = h.epoch, "cluster: released the lease"),
            Ok(Written::Refused(_)) => {}
            Err(e) => {
                tracing::warn!(lease = %self.name, "cluster: releasing the lease: {e}; another replica takes it over after {:?}", self.duration)
            }
        }
    }
}

fn now() -> String {
    Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
