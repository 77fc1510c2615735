//! The jobs wing's items in the cluster table (`[cluster]`): each firing's claim, which exactly one
//! replica wins and then completes with its run's summary, and each rate schedule's shared anchor.
//!
//! - `pk = "job#<name>"`, `sk = "firing#<scheduled instant>"`: `owner` (the replica that runs it),
//!   `trigger`, `state` (`running`, then the run's outcome), counts, the owner's local run id, times,
//!   `reason`; TTL `history_retention`. The key is the job and its *scheduled* instant (before jitter),
//!   computed alike by every replica, so replicas whose clocks differ contend for the same key.
//! - `pk = "job#<name>"`, `sk = "anchor#<schedule>"`: when the first replica loaded that rate
//!   schedule; every replica counts the rate's firings from it, so none shifts the phase.

use super::outcome::{RunOutcome, TriggerKind};
use crate::cluster::claims::{self, Claim, OWNER};
use crate::cluster::table::{get_n, get_s, n, s, Item, TableError, Written};
use crate::cluster::Cluster;
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, SubsecRound, Utc};
use std::time::Duration;

/// The claiming process's incarnation: a claim still `running` whose incarnation is gone is abandoned.
const INCARNATION: &str = "incarnation";
/// How many of a job's latest firings the abandoned-firing sweep looks at: more than can be
/// running at once (one per firing still going; `overlap = "allow"` with runs longer than their period).
const SWEEP_DEPTH: usize = 50;

fn partition(job: &str) -> String {
    format!("job#{job}")
}

fn firing_key(at: DateTime<Utc>) -> String {
    format!("firing#{}", at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

/// Claim the firing of `job` scheduled for `at`: exactly one replica wins it.
pub async fn claim_firing(
    c: &Cluster,
    job: &str,
    at: DateTime<Utc>,
    trigger: TriggerKind,
    keep: Duration,
) -> Result<Claim, TableError> {
    let fields = Item::from([
        ("job".to_string(), s(job)),
        ("scheduled_for".into(), s(at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))),
        ("trigger".into(), s(trigger.as_str())),
        ("state".into(), s(RunOutcome::Running.as_str())),
        (INCARNATION.into(), s(&c.incarnation)),
    ]);
    claims::claim(&c.table, &partition(job), &firing_key(at), &c.replica, fields, keep).await
}

/// How a claimed firing ended.
#[derive(Debug, Clone)]
pub struct FiringEnd {
    pub outcome: RunOutcome,
    pub hosts: usize,
    pub ok: usize,
    pub failed: usize,
    pub skipped: usize,
    /// The run's id in the owner's own store (where its hosts' output is).
    pub run_id: Option<i64>,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: DateTime<Utc>,
    pub reason: Option<String>,
}

impl FiringEnd {
    /// A firing that started no run (skipped, or failed before its hosts were known).
    pub fn without_run(outcome: RunOutcome, reason: &str) -> FiringEnd {
        FiringEnd {
            outcome,
            hosts: 0,
            ok: 0,
            failed: 0,
            skipped: 0,
            run_id: None,
            started_at: None,
            ended_at: Utc::now(),
            reason: Some(reason.to_string()),
        }
    }
}

/// Complete this replica's claim of a firing with how it ended.
pub async fn finish_firing(c: &Cluster, job: &str, at: DateTime<Utc>, end: &FiringEnd) -> Result<(), TableError> {
    let ts = |t: DateTime<Utc>| s(t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
    let mut set: Vec<(&str, AttributeValue)> = vec![
        ("state", s(end.outcome.as_str())),
        ("hosts", n(end.hosts)),
        ("hosts_ok", n(end.ok)),
        ("hosts_failed", n(end.failed)),
        ("hosts_skipped", n(end.skipped)),
        ("ended_at", ts(end.ended_at)),
    ];
    set.extend(end.run_id.map(|id| ("run_id", n(id))));
    set.extend(end.started_at.map(|t| ("started_at", ts(t))));
    set.extend(end.reason.as_ref().map(|r| ("reason", s(r))));
    // Every attribute through a #name: DynamoDB reserves words like `state` and `owner`.
    let update = format!("SET {}", set.iter().map(|(k, _)| format!("#{k} = :{k}")).collect::<Vec<_>>().join(", "));
    let placeholders: Vec<(String, String, AttributeValue)> =
        set.into_iter().map(|(k, v)| (format!("#{k}"), format!(":{k}"), v)).collect();
    let mut names: Vec<(&str, &str)> = placeholders.iter().map(|(n, _, _)| (n.as_str(), &n[1..])).collect();
    names.push(("#owner", OWNER));
    let mut values: Vec<(&str, AttributeValue)> =
        placeholders.iter().map(|(_, v, a)| (v.as_str(), a.clone())).collect();
    values.push((":me", s(&c.replica)));
    let r = c
        .table
        .update_if_named(&partition(job), &firing_key(at), &update, Some("#owner = :me"), &values, &names)
        .await?;
    if let Written::Refused(_) = r {
        tracing::warn!(job, firing = %at, "cluster: the firing's claim is no longer this replica's; its end is not recorded there");
    }
    Ok(())
}

/// Where `job`'s rate `schedule` counts from across the cluster: the first replica to load it sets
/// it (`now`, whole seconds); the others read it.
pub async fn shared_anchor(
    c: &Cluster,
    job: &str,
    schedule: &str,
    now: DateTime<Utc>,
) -> Result<DateTime<Utc>, TableError> {
    let now = now.trunc_subsecs(0);
    let item = Item::from([
        ("pk".to_string(), s(partition(job))),
        ("sk".into(), s(format!("anchor#{schedule}"))),
        ("anchor".into(), n(now.timestamp())),
        (OWNER.into(), s(&c.replica)),
    ]);
    match c.table.put_if(item, "attribute_not_exists(pk)").await? {
        Written::Done => Ok(now),
        Written::Refused(there) => {
            let there = match there {
                Some(i) => Some(i),
                None => c.table.get(&partition(job), &format!("anchor#{schedule}")).await?,
            };
            let secs: Option<i64> = there.as_ref().and_then(|i| get_n(i, "anchor"));
            Ok(secs.and_then(|t| DateTime::from_timestamp(t, 0)).unwrap_or(now))
        }
    }
}

/// A firing as the cluster table records it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ClusterFiring {
    pub job: String,
    pub scheduled_for: String,
    pub replica: String,
    pub trigger: String,
    pub state: String,
    pub hosts: Option<u64>,
    pub hosts_ok: Option<u64>,
    pub hosts_failed: Option<u64>,
    pub hosts_skipped: Option<u64>,
    /// The run's id in its replica's own store.
    pub run_id: Option<i64>,
    pub started_at: Option<String>,
    pub ended_at: Option<String>,
    pub reason: Option<String>,
}

impl ClusterFiring {
    fn from_item(i: &Item) -> Option<ClusterFiring> {
        let text = |k: &str| get_s(i, k).map(str::to_string);
        Some(ClusterFiring {
            job: text("job")?,
            scheduled_for: text("scheduled_for")?,
            replica: text(OWNER).unwrap_or_default(),
            trigger: text("trigger").unwrap_or_default(),
            state: text("state").unwrap_or_default(),
            hosts: get_n(i, "hosts"),
            hosts_ok: get_n(i, "hosts_ok"),
            hosts_failed: get_n(i, "hosts_failed"),
            hosts_skipped: get_n(i, "hosts_skipped"),
            run_id: get_n(i, "run_id"),
            started_at: text("started_at"),
            ended_at: text("ended_at"),
            reason: text("reason"),
        })
    }
}

/// The latest `limit` firings of `job`, newest first.
pub async fn recent(
    c: &crate::cluster::table::Table,
    job: &str,
    limit: usize,
) -> Result<Vec<ClusterFiring>, TableError> {
    let items = c.query(&partition(job), "firing#", limit).await?;
    Ok(items.iter().filter_map(ClusterFiring::from_item).collect())
}

const RUNNING: &str = "running";

/// Who holds a job's `running` marker.
#[derive(Debug, Clone)]
pub struct RunningHolder {
    pub firing: String,
    pub owner: String,
}

/// Take `job`'s cluster-wide `running` marker (`pk = "job#<name>"`, `sk = "running"`) for the firing
/// at `at`: `None` when taken (or already this firing's), else who holds it.
pub async fn take_running(c: &Cluster, job: &str, at: DateTime<Utc>) -> Result<Option<RunningHolder>, TableError> {
    let firing = at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let item = Item::from([
        ("pk".to_string(), s(partition(job))),
        ("sk".into(), s(RUNNING)),
        ("firing".into(), s(&firing)),
        (OWNER.into(), s(&c.replica)),
        (INCARNATION.into(), s(&c.incarnation)),
    ]);
    match c.table.put_if(item, "attribute_not_exists(pk)").await? {
        Written::Done => Ok(None),
        Written::Refused(there) => {
            let there = match there {
                Some(i) => Some(i),
                None => c.table.get(&partition(job), RUNNING).await?,
            };
            let Some(there) = there else { return Box::pin(take_running(c, job, at)).await };
            let holder = RunningHolder {
                firing: get_s(&there, "firing").unwrap_or("?").to_string(),
                owner: get_s(&there, OWNER).unwrap_or("?").to_string(),
            };
            // This very firing (an answer lost, then retried): it is ours.
            if holder.firing == firing && holder.owner == c.replica {
                return Ok(None);
            }
            Ok(Some(holder))
        }
    }
}

/// Clear `job`'s `running` marker if it is this firing's.
pub async fn release_running(c: &Cluster, job: &str, at: DateTime<Utc>) -> Result<(), TableError> {
    let firing = at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    c.table
        .delete_if(
            &partition(job),
            RUNNING,
            "#firing = :firing AND #owner = :me",
            &[(":firing", s(firing)), (":me", s(&c.replica))],
            &[("#firing", "firing"), ("#owner", OWNER)],
        )
        .await?;
    Ok(())
}

/// Record as `interrupted` the firings of `jobs` still `running` whose replica is gone (died, or
/// started again, this one included): whoever notices first records it, once (a conditional write
/// on the owner, its incarnation and the state). Returns how many were recorded.
pub async fn interrupt_abandoned(c: &Cluster, jobs: &[String]) -> Result<usize, TableError> {
    let mut n = 0;
    for job in jobs {
        for item in c.table.query(&partition(job), "firing#", SWEEP_DEPTH).await? {
            let (Some(state), Some(owner), Some(sk)) = (get_s(&item, "state"), get_s(&item, OWNER), get_s(&item, "sk"))
            else {
                continue;
            };
            let incarnation = get_s(&item, INCARNATION).unwrap_or_default();
            if state != RunOutcome::Running.as_str() || !c.abandoned(owner, incarnation) {
                continue;
            }
            let why = if owner == c.replica {
                "this replica stopped before the run ended (killed or crashed); recorded at its next start".to_string()
            } else {
                format!(
                    "replica {owner} stopped before the run ended (killed, crashed or cut off); recorded by {}",
                    c.replica
                )
            };
            let now = s(Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
            let r = c
                .table
                .update_if_named(
                    &partition(job),
                    sk,
                    "SET #state = :interrupted, #reason = :why, #ended = :now",
                    Some("#state = :running AND #owner = :owner AND #inc = :inc"),
                    &[
                        (":interrupted", s(RunOutcome::Interrupted.as_str())),
                        (":why", s(&why)),
                        (":now", now),
                        (":running", s(RunOutcome::Running.as_str())),
                        (":owner", s(owner)),
                        (":inc", s(incarnation)),
                    ],
                    &[
                        ("#state", "state"),
                        ("#reason", "reason"),
                        ("#ended", "ended_at"),
                        ("#owner", OWNER),
                        ("#inc", INCARNATION),
                    ],
                )
                .await?;
            if let Written::Done = r {
                tracing::warn!(job = %job, firing = %sk.trim_start_matches("firing#"), owner = %owner, "cluster: {why}");
                n += 1;
            }
        }
        // The job's running marker, if a gone replica left it.
        if let Some(m) = c.table.get(&partition(job), RUNNING).await? {
            let (owner, inc) = (get_s(&m, OWNER).unwrap_or_default(), get_s(&m, INCARNATION).unwrap_or_default());
            if c.abandoned(owner, inc) {
                c.table
                    .delete_if(
                        &partition(job),
                        RUNNING,
                        "#owner = :owner AND #inc = :inc",
                        &[(":owner", s(owner)), (":inc", s(inc))],
                        &[("#owner", OWNER), ("#inc", INCARNATION)],
                    )
                    .await?;
            }
        }
    }
    Ok(n)
}
