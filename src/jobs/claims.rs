//! The jobs wing's items in the cluster table (`[cluster]`): each firing's claim, which exactly one
//! replica wins and then completes with its run's summary; each rate schedule's shared anchor; each
//! job's `running` marker (the overlap policy across replicas); and the sweep that records the work
//! of gone replicas.
//!
//! - `pk = "job#<name>"`, `sk = "firing#<scheduled instant>"`: `owner`, `incarnation`, `trigger`,
//!   `state` (`running`, then the run's outcome, or `interrupted`), counts, the owner's local run id,
//!   times, `reason`; `active = <owner>` while running; TTL `history_retention` + a day. The key is
//!   the job and its *scheduled* instant (before jitter), computed alike by every replica, so
//!   replicas whose clocks differ contend for the same key.
//! - `pk = "job#<name>"`, `sk = "anchor#<schedule>"`: when the first replica loaded that rate
//!   schedule; every replica counts the rate's firings from it, so none shifts the phase.
//! - `pk = "job#<name>"`, `sk = "running"`: the firing that runs the job now (`active = <owner>`).

use super::outcome::{RunOutcome, TriggerKind};
use crate::cluster::claims::{self, Claim, OWNER};
use crate::cluster::table::{get_n, get_s, n, s, Item, TableError, Written, ACTIVE};
use crate::cluster::Cluster;
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, SubsecRound, Utc};
use std::collections::HashMap;
use std::time::Duration;

/// The claiming process's incarnation: work of an incarnation that is gone is abandoned.
const INCARNATION: &str = "incarnation";
const RUNNING: &str = "running";
/// A claim outlives the history it belongs to by a day, so a run longer than a short retention
/// still finds its claim to complete.
const CLAIM_KEEP_EXTRA: Duration = Duration::from_secs(86400);

fn partition(job: &str) -> String {
    format!("job#{job}")
}

fn instant(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn firing_key(at: DateTime<Utc>) -> String {
    format!("firing#{}", instant(at))
}

/// Claim the firing of `job` scheduled for `at`: exactly one replica wins it.
pub async fn claim_firing(
    c: &Cluster,
    job: &str,
    at: DateTime<Utc>,
    trigger: TriggerKind,
    keep: Duration,
) -> Result<Claim, TableError> {
    let (pk, sk) = (partition(job), firing_key(at));
    let fields = Item::from([
        ("job".to_string(), s(job)),
        ("scheduled_for".into(), s(instant(at))),
        ("trigger".into(), s(trigger.as_str())),
        ("state".into(), s(RunOutcome::Running.as_str())),
        (INCARNATION.into(), s(&c.incarnation)),
    ]);
    // Held before the claim is made, so this process's own sweep never takes it for abandoned.
    c.hold(&pk, &sk);
    let r = claims::claim(&c.table, &pk, &sk, &c.replica, fields, keep + CLAIM_KEEP_EXTRA).await;
    if !matches!(r, Ok(Claim::Won)) {
        c.release(&pk, &sk);
    }
    r
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

/// Complete this replica's claim of a firing with how it ended (the claim leaves the `active`
/// index). Repeating it is harmless; a claim a sweep ended meanwhile (`interrupted`) is left so.
pub async fn finish_firing(c: &Cluster, job: &str, at: DateTime<Utc>, end: &FiringEnd) -> Result<(), TableError> {
    let (pk, sk) = (partition(job), firing_key(at));
    let mut set: Vec<(&str, AttributeValue)> = vec![
        ("state", s(end.outcome.as_str())),
        ("hosts", n(end.hosts)),
        ("hosts_ok", n(end.ok)),
        ("hosts_failed", n(end.failed)),
        ("hosts_skipped", n(end.skipped)),
        ("ended_at", s(instant(end.ended_at))),
    ];
    set.extend(end.run_id.map(|id| ("run_id", n(id))));
    set.extend(end.started_at.map(|t| ("started_at", s(instant(t)))));
    set.extend(end.reason.as_ref().map(|r| ("reason", s(r))));
    // Every attribute through a #name: DynamoDB reserves words like `state` and `owner`.
    let update = format!(
        "SET {} REMOVE #active",
        set.iter().map(|(k, _)| format!("#{k} = :{k}")).collect::<Vec<_>>().join(", ")
    );
    let mut names: HashMap<String, String> = set.iter().map(|(k, _)| (format!("#{k}"), k.to_string())).collect();
    names.extend([("#owner", OWNER), ("#inc", INCARNATION), ("#active", ACTIVE)].map(|(a, b)| (a.into(), b.into())));
    let mut values: Vec<(String, AttributeValue)> = set.into_iter().map(|(k, v)| (format!(":{k}"), v)).collect();
    values.extend([
        (":me".to_string(), s(&c.replica)),
        (":myinc".to_string(), s(&c.incarnation)),
        (":running".to_string(), s(RunOutcome::Running.as_str())),
    ]);
    let values: Vec<(&str, AttributeValue)> = values.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    let names: Vec<(&str, &str)> = names.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let r = c
        .table
        .update_if_named(
            &pk,
            &sk,
            &update,
            Some("#owner = :me AND #inc = :myinc AND (#state = :running OR #state = :state)"),
            &values,
            &names,
        )
        .await;
    // Ended here either way: if the record failed, the sweep finds the claim no task holds.
    c.release(&pk, &sk);
    if let Written::Refused(_) = r? {
        tracing::warn!(job, firing = %at, "cluster: the firing's claim was ended by another replica (taken for gone); its end is not recorded there");
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
    let (pk, sk) = (partition(job), format!("anchor#{schedule}"));
    let item = Item::from([
        ("pk".to_string(), s(&pk)),
        ("sk".into(), s(&sk)),
        ("anchor".into(), n(now.timestamp())),
        (OWNER.into(), s(&c.replica)),
    ]);
    let there = match c.table.put_if(item, "attribute_not_exists(pk)").await? {
        Written::Done => return Ok(now),
        Written::Refused(Some(there)) => Some(there),
        Written::Refused(None) => c.table.get(&pk, &sk).await?,
    };
    let secs: Option<i64> = there.as_ref().and_then(|i| get_n(i, "anchor"));
    secs.and_then(|t| DateTime::from_timestamp(t, 0)).ok_or_else(|| TableError::Aws {
        table: c.table.name().to_string(),
        source: crate::aws::CallError {
            operation: "PutItem",
            code: None,
            message: format!("{pk}/{sk}: the anchor item has no anchor; delete it so a replica writes it again"),
        },
    })
}

/// Who holds a job's `running` marker.
#[derive(Debug, Clone)]
pub struct RunningHolder {
    pub firing: String,
    pub owner: String,
}

/// Take `job`'s cluster-wide `running` marker for the firing at `at`: `None` when taken (or already
/// this firing's), else who holds it.
pub async fn take_running(c: &Cluster, job: &str, at: DateTime<Utc>) -> Result<Option<RunningHolder>, TableError> {
    let (pk, firing) = (partition(job), instant(at));
    let item = Item::from([
        ("pk".to_string(), s(&pk)),
        ("sk".into(), s(RUNNING)),
        ("firing".into(), s(&firing)),
        (OWNER.into(), s(&c.replica)),
        (ACTIVE.into(), s(&c.replica)),
        (INCARNATION.into(), s(&c.incarnation)),
    ]);
    c.hold(&pk, RUNNING);
    let there = loop {
        let there = match c.table.put_if(item.clone(), "attribute_not_exists(pk)").await {
            Ok(Written::Done) => return Ok(None),
            Ok(Written::Refused(Some(there))) => Some(there),
            Ok(Written::Refused(None)) => c.table.get(&pk, RUNNING).await.inspect_err(|_| c.release(&pk, RUNNING))?,
            Err(e) => {
                c.release(&pk, RUNNING);
                return Err(e);
            }
        };
        // Gone between the refusal and the read: try again.
        if let Some(there) = there {
            break there;
        }
    };
    let holder = RunningHolder {
        firing: get_s(&there, "firing").unwrap_or("?").to_string(),
        owner: get_s(&there, OWNER).unwrap_or("?").to_string(),
    };
    // This very firing (an answer lost, then retried): it is ours.
    if holder.firing == firing && holder.owner == c.replica {
        return Ok(None);
    }
    c.release(&pk, RUNNING);
    Ok(Some(holder))
}

/// Clear `job`'s `running` marker if it is this firing's.
pub async fn release_running(c: &Cluster, job: &str, at: DateTime<Utc>) -> Result<(), TableError> {
    let pk = partition(job);
    let r = c
        .table
        .delete_if(
            &pk,
            RUNNING,
            "#firing = :firing AND #owner = :me AND #inc = :myinc",
            &[(":firing", s(instant(at))), (":me", s(&c.replica)), (":myinc", s(&c.incarnation))],
            &[("#firing", "firing"), ("#owner", OWNER), ("#inc", INCARNATION)],
        )
        .await;
    // Released here either way: if the delete failed, the sweep finds the marker no task holds.
    c.release(&pk, RUNNING);
    r
}

/// The sweep: every item of the cluster's `active` index (work in progress) that belongs to the
/// jobs wing and whose owner is gone (see [`Cluster::abandoned`]) is ended: a firing's claim is
/// recorded `interrupted`, a `running` marker deleted. Each write is conditional on the owner, its
/// incarnation and the state, so whoever notices first records it, once. Returns how many.
pub async fn sweep(c: &Cluster) -> Result<usize, TableError> {
    let mut n = 0;
    let mut read = HashMap::new();
    for item in c.table.active().await? {
        let (Some(pk), Some(sk), Some(owner)) = (get_s(&item, "pk"), get_s(&item, "sk"), get_s(&item, OWNER)) else {
            continue;
        };
        let Some(job) = pk.strip_prefix("job#") else { continue };
        let incarnation = get_s(&item, INCARNATION).unwrap_or_default();
        if !c.abandoned(pk, sk, owner, incarnation, &mut read).await? {
            continue;
        }
        let why = if owner != c.replica {
            format!(
                "replica {owner} stopped before the run ended (killed, crashed or cut off); recorded by {}",
                c.replica
            )
        } else if incarnation != c.incarnation {
            "this replica stopped before the run ended (killed or crashed); recorded at its next start".to_string()
        } else {
            "this replica lost track of the run (its end could not be recorded)".to_string()
        };
        let values = [(":owner", s(owner)), (":inc", s(incarnation))];
        let names = [("#owner", OWNER), ("#inc", INCARNATION)];
        if sk == RUNNING {
            c.table.delete_if(pk, sk, "#owner = :owner AND #inc = :inc", &values, &names).await?;
            continue;
        }
        let mut values = values.to_vec();
        values.extend([
            (":interrupted", s(RunOutcome::Interrupted.as_str())),
            (":why", s(&why)),
            (":now", s(instant(Utc::now()))),
            (":running", s(RunOutcome::Running.as_str())),
        ]);
        let mut names = names.to_vec();
        names.extend([("#state", "state"), ("#reason", "reason"), ("#ended", "ended_at"), ("#active", ACTIVE)]);
        let r = c
            .table
            .update_if_named(
                pk,
                sk,
                "SET #state = :interrupted, #reason = :why, #ended = :now REMOVE #active",
                Some("#state = :running AND #owner = :owner AND #inc = :inc"),
                &values,
                &names,
            )
            .await?;
        if let Written::Done = r {
            tracing::warn!(job = %job, firing = %sk.trim_start_matches("firing#"), owner = %owner, "cluster: {why}");
            n += 1;
        }
    }
    Ok(n)
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
    table: &crate::cluster::table::Table,
    job: &str,
    limit: usize,
) -> Result<Vec<ClusterFiring>, TableError> {
    let items = table.query(&partition(job), "firing#", limit).await?;
    Ok(items.iter().filter_map(ClusterFiring::from_item).collect())
}

/// The latest firing of `job` that any replica claimed and did not skip (what `catch_up` counts
/// from in a cluster). Among the latest 100 claims; none: None.
pub async fn last_ran(table: &crate::cluster::table::Table, job: &str) -> Result<Option<DateTime<Utc>>, TableError> {
    let firings = recent(table, job, 100).await?;
    Ok(firings
        .iter()
        .filter(|f| f.state != RunOutcome::Skipped.as_str())
        .find_map(|f| DateTime::parse_from_rfc3339(&f.scheduled_for).ok())
        .map(|t| t.with_timezone(&Utc)))
}
