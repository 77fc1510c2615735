//! Carrying out a decision on the fleet. Targets are absolute (ModifySpotFleetRequest sets the
//! target capacity to a value, not by a delta), so a decision repeated after a crash changes nothing
//! twice. Scale-in: set the chosen container instances DRAINING, wait until their tasks have stopped,
//! lower the target with ExcessCapacityTerminationPolicy=noTermination (the fleet picks no victims of
//! its own), then terminate exactly those. An instance that still runs tasks is never terminated, and
//! whatever fails once the drain has begun puts the victims that still run back to ACTIVE.

use super::fence::Fence;
use super::fleet::{CapacityTarget, FleetError};
use super::mark;
use super::observe::{self, Member};
use super::Clients;
use crate::aws::{call_error, CallError};
use crate::cluster::lease::Fenced;
use aws_sdk_ec2::types::Filter;
use aws_sdk_ecs::types::ContainerInstanceStatus;
use std::collections::HashSet;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How often a drain's progress is checked: tasks take seconds to stop, and each check is a few
/// ECS calls per victim.
const DRAIN_POLL: Duration = Duration::from_secs(2);
/// UpdateContainerInstancesState takes at most 10 container instances per call.
const STATE_BATCH: usize = 10;

#[derive(Debug, thiserror::Error)]
pub enum ActError {
    #[error(transparent)]
    Aws(#[from] CallError),
    #[error("ECS did not set container instances of cluster {cluster} {status}: {failures}")]
    StateRefused { cluster: String, status: String, failures: String },
    #[error("instances {busy:?} still run tasks after the drain timeout; nothing terminated ({why})")]
    DrainTimeout { busy: Vec<String>, why: String },
    #[error("instances {0:?} run tasks and drain_before_scale_in is false; nothing terminated")]
    Busy(Vec<String>),
    #[error("cancelled: opsd is stopping; nothing terminated")]
    Cancelled,
    #[error(
        "instances {0:?} are no longer ACTIVE (drained by someone else?); nothing done, the next decision looks again"
    )]
    NotActive(Vec<String>),
    #[error(transparent)]
    Fleet(#[from] FleetError),
    /// This replica no longer leads (its lease passed or could not be confirmed): the step was not
    /// taken, and what it began is left to the next leader, which finds it in the lease's journal.
    #[error("fenced: {0}")]
    Fenced(#[from] Fenced),
    /// A failure once the victims were DRAINING, and what came of putting them back to work.
    #[error("{cause}; {undone}")]
    Undone { cause: Box<ActError>, undone: String, restored: bool },
}

impl ActError {
    /// Victims may still be DRAINING: putting them back to ACTIVE failed and must be tried again.
    pub fn left_draining(&self) -> bool {
        matches!(self, ActError::Undone { restored: false, .. })
    }

    /// The step was refused for want of the lease.
    pub fn fenced(&self) -> bool {
        matches!(self, ActError::Fenced(_) | ActError::Fleet(FleetError::Fenced(_)))
    }
}

/// A scale-in to carry out.
pub struct ScaleIn<'a> {
    pub cluster: &'a str,
    pub target: &'a CapacityTarget,
    /// The target capacity now, restored if terminating fails after it was lowered.
    pub from: u32,
    /// The new target capacity.
    pub to: u32,
    pub victims: &'a [Member],
    pub drain: bool,
    pub drain_timeout: Duration,
    /// Task groups (`service:NAME`) of DAEMON services: without draining, their tasks do not keep
    /// an instance from counting as empty (they belong to it and end with it).
    pub daemon_groups: &'a HashSet<String>,
    pub fence: &'a Fence,
}

/// Drain the victims (when `drain`), wait for their tasks to stop, lower the target, terminate them.
pub async fn scale_in(c: &Clients, p: ScaleIn<'_>, cancel: &CancellationToken) -> Result<(), ActError> {
    let ScaleIn { cluster, target, from, to, victims, drain, drain_timeout, daemon_groups, fence } = p;
    let arns: Vec<String> = victims.iter().map(|v| v.arn.clone()).collect();
    // Only instances still ACTIVE: one drained by someone else meanwhile is theirs, and would be
    // set back to ACTIVE by an undo.
    let described = observe::describe_container_instances(c, cluster, &arns).await?;
    let not_active: Vec<String> = victims
        .iter()
        .filter(|v| {
            !described
                .iter()
                .any(|ci| ci.container_instance_arn() == Some(v.arn.as_str()) && ci.status() == Some("ACTIVE"))
        })
        .map(|v| v.ec2_id.clone())
        .collect();
    if !not_active.is_empty() {
        return Err(ActError::NotActive(not_active));
    }
    let no_groups = HashSet::new();
    let ignore = if drain { &no_groups } else { daemon_groups };
    if !drain {
        // DRAINING stops service tasks: without draining, only instances that run nothing (but
        // their DAEMON services' tasks) may go, and that is checked before anything is touched.
        let b = busy(c, cluster, victims, ignore).await?;
        if !b.is_empty() {
            return Err(ActError::Busy(b));
        }
    }
    // DRAINING in every case: no new task may land on an instance about to go. Noted on the lease
    // first, so the next leader puts them back if this one cannot.
    let ids: Vec<String> = victims.iter().map(|v| v.ec2_id.clone()).collect();
    fence.draining(&ids).await?;
    // The instances this action has set DRAINING (known here; marked on ECS for after a crash):
    // only these are ever set back to ACTIVE.
    let mut ours: HashSet<String> = HashSet::new();
    for chunk in arns.chunks(STATE_BATCH) {
        // Ours from the attempt on: a call that failed may still have landed (its answer lost, or
        // ECS refusing only some), and what it drained must go back.
        ours.extend(chunk.iter().cloned());
        if let Err(e) = set_state(c, cluster, chunk, ContainerInstanceStatus::Draining, fence).await {
            return Err(undo(c, cluster, target, victims, &[], &ours, e, fence).await);
        }
        if let Err(e) = mark::put(c, cluster, chunk).await {
            tracing::warn!(cluster, "capacity: {e}; if opsd stops before this scale-in ends, it will not know it drained {}: they would stay DRAINING", chunk.join(", "));
        }
    }
    let emptied = if drain {
        wait_empty(c, cluster, victims, drain_timeout, fence, cancel).await
    } else {
        // A task may have been placed between the check above and DRAINING.
        match busy(c, cluster, victims, ignore).await {
            Ok(b) if b.is_empty() => Ok(()),
            Ok(b) => Err(ActError::Busy(b)),
            Err(e) => Err(e.into()),
        }
    };
    if let Err(e) = emptied {
        return Err(undo(c, cluster, target, victims, &[], &ours, e, fence).await);
    }
    if let Err(failed) = target.remove(c, from, to, &ids, fence, cancel).await {
        return Err(undo(c, cluster, target, victims, &failed.requested, &ours, failed.error.into(), fence).await);
    }
    Ok(())
}

/// After a failure once the drain began: the victims this action set DRAINING (`ours`, by ARN) that
/// still run go back to ACTIVE, except those whose termination was already `requested`. Not by a
/// leader that lost its lease: the victims may be the next leader's own by now, and the journal
/// tells it to put them back.
#[allow(clippy::too_many_arguments)]
async fn undo(
    c: &Clients,
    cluster: &str,
    target: &CapacityTarget,
    victims: &[Member],
    requested: &[String],
    ours: &HashSet<String>,
    cause: ActError,
    fence: &Fence,
) -> ActError {
    if cause.fenced() {
        return cause;
    }
    if let Err(f) = fence.confirm().await {
        tracing::warn!(cluster, "capacity: {cause}; the victims are left to the next leader");
        return ActError::Fenced(f);
    }
    let back: Vec<Member> = victims.iter().filter(|v| !requested.contains(&v.ec2_id)).cloned().collect();
    let (undone, restored) = match reactivate(c, cluster, target, &back, Some(ours), fence).await {
        Ok(ids) if ids.is_empty() => ("no victim that still runs was left DRAINING".to_string(), true),
        Ok(ids) => (format!("{} set back to ACTIVE", ids.join(", ")), true),
        Err(e) => (
            format!(
                "setting them back to ACTIVE failed ({e}); opsd tries again at its next decision, or: aws ecs update-container-instances-state --cluster {cluster} --status ACTIVE --container-instances {}",
                victims.iter().map(|v| v.arn.as_str()).collect::<Vec<_>>().join(" ")
            ),
            false,
        ),
    };
    ActError::Undone { cause: Box::new(cause), undone, restored }
}

/// Set back to ACTIVE those of `victims` that are still DRAINING because opsd drained them (in this
/// action: `ours`, by ARN; or, after a crash, carrying opsd's mark) and whose EC2 instance is still
/// pending or running, and (in a group) not being terminated: one on its way out must get no new
/// task. A victim DRAINING without opsd's doing (a Spot interruption, an operator) is left so.
/// Returns the EC2 ids set ACTIVE.
pub async fn reactivate(
    c: &Clients,
    cluster: &str,
    target: &CapacityTarget,
    victims: &[Member],
    ours: Option<&HashSet<String>>,
    fence: &Fence,
) -> Result<Vec<String>, ActError> {
    let ids: Vec<String> = victims.iter().map(|v| v.ec2_id.clone()).collect();
    let mut alive = running_instances(c, &ids).await?;
    let leaving = target.leaving(c, &ids).await?;
    alive.retain(|id| !leaving.contains(id));
    let alive_arns: Vec<String> = victims.iter().filter(|v| alive.contains(&v.ec2_id)).map(|v| v.arn.clone()).collect();
    let mut draining: Vec<(String, String)> = Vec::new();
    let mut marked: Vec<(String, String)> = Vec::new();
    for ci in observe::describe_container_instances(c, cluster, &alive_arns).await? {
        if ci.status() != Some("DRAINING") {
            continue;
        }
        let arn = ci.container_instance_arn().unwrap_or_default().to_string();
        let ec2_id = ci.ec2_instance_id().unwrap_or_default().to_string();
        let mark = mark::of(&ci).map(str::to_string);
        if !(ours.is_some_and(|o| o.contains(&arn)) || mark.is_some()) {
            tracing::warn!(
                cluster,
                "capacity: {ec2_id} is DRAINING, but not by opsd (it has no {} mark): left DRAINING, as a Spot interruption or an operator drained it; if opsd did (it stopped between draining and marking it): aws ecs update-container-instances-state --cluster {cluster} --status ACTIVE --container-instances {arn}",
                mark::NAME
            );
            continue;
        }
        if let Some(v) = mark {
            marked.push((arn.clone(), v));
        }
        draining.push((arn, ec2_id));
    }
    let arns: Vec<String> = draining.iter().map(|(a, _)| a.clone()).collect();
    set_state(c, cluster, &arns, ContainerInstanceStatus::Active, fence).await?;
    if let Err(e) = mark::clear(c, cluster, &marked).await {
        tracing::warn!(cluster, "capacity: removing opsd's drain mark from instances set back to ACTIVE: {e}");
    }
    Ok(draining.into_iter().map(|(_, id)| id).collect())
}

/// The EC2 instances among `ids` that are pending or running (a filter, so one long gone is simply
/// not listed instead of failing the call).
async fn running_instances(c: &Clients, ids: &[String]) -> Result<HashSet<String>, CallError> {
    let mut alive = HashSet::new();
    if ids.is_empty() {
        return Ok(alive);
    }
    let mut pages = c
        .ec2
        .describe_instances()
        .filters(Filter::builder().name("instance-id").set_values(Some(ids.to_vec())).build())
        .filters(Filter::builder().name("instance-state-name").values("pending").values("running").build())
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| call_error("DescribeInstances", e))?;
        for r in page.reservations() {
            alive.extend(r.instances().iter().filter_map(|i| i.instance_id()).map(str::to_string));
        }
    }
    Ok(alive)
}

/// UpdateContainerInstancesState in batches of [`STATE_BATCH`], each under the lease (confirmed, and
/// within its deadline); an instance ECS did not update is an error (a DRAINING that did not
/// happen would let tasks land on a victim).
async fn set_state(
    c: &Clients,
    cluster: &str,
    arns: &[String],
    status: ContainerInstanceStatus,
    fence: &Fence,
) -> Result<(), ActError> {
    for chunk in arns.chunks(STATE_BATCH) {
        fence.confirm().await?;
        let call = c
            .ecs
            .update_container_instances_state()
            .cluster(cluster)
            .set_container_instances(Some(chunk.to_vec()))
            .status(status.clone())
            .send();
        let out = fence.bounded(call).await?.map_err(|e| call_error("UpdateContainerInstancesState", e))?;
        if !out.failures().is_empty() {
            let failures = out
                .failures()
                .iter()
                .map(|f| format!("{} ({})", f.arn().unwrap_or("?"), f.reason().unwrap_or("no reason given")))
                .collect::<Vec<_>>()
                .join(", ");
            return Err(ActError::StateRefused { cluster: cluster.into(), status: status.as_str().into(), failures });
        }
    }
    Ok(())
}

/// EC2 ids of the victims with a task not yet STOPPED (tasks of the `ignore` groups aside). A
/// drained instance's tasks are desired STOPPED at once, while their containers may take a while
/// to stop (connection draining, stop timeout): the tasks' last status is what counts, not the
/// counts. A container instance ECS no longer describes may still run what it ran: it is never
/// counted empty.
async fn busy(
    c: &Clients,
    cluster: &str,
    victims: &[Member],
    ignore: &HashSet<String>,
) -> Result<Vec<String>, CallError> {
    use aws_sdk_ecs::types::DesiredStatus;
    let arns: Vec<String> = victims.iter().map(|v| v.arn.clone()).collect();
    let described = observe::describe_container_instances(c, cluster, &arns).await?;
    let mut busy: Vec<String> = victims
        .iter()
        .filter(|v| !described.iter().any(|ci| ci.container_instance_arn() == Some(v.arn.as_str())))
        .map(|v| v.ec2_id.clone())
        .collect();
    for ci in &described {
        let arn = ci.container_instance_arn().unwrap_or_default();
        let mut task_arns = Vec::new();
        for desired in [DesiredStatus::Running, DesiredStatus::Stopped] {
            let mut pages = c
                .ecs
                .list_tasks()
                .cluster(cluster)
                .container_instance(arn)
                .desired_status(desired)
                .max_results(100)
                .into_paginator()
                .send();
            while let Some(page) = pages.next().await {
                task_arns.extend(page.map_err(|e| call_error("ListTasks", e))?.task_arns().iter().cloned());
            }
        }
        // The counts include ignored tasks: only the tasks themselves can tell them apart.
        let live = (ignore.is_empty() && ci.running_tasks_count() + ci.pending_tasks_count() > 0)
            || observe::describe_tasks(c, cluster, &task_arns)
                .await?
                .iter()
                .any(|t| t.last_status() != Some("STOPPED") && !t.group().is_some_and(|g| ignore.contains(g)));
        if live {
            busy.push(ci.ec2_instance_id().unwrap_or_default().to_string());
        }
    }
    Ok(busy)
}

/// Why the services whose tasks still run on `victims` keep them there, for each service whose
/// deployment configuration forbids what a drain needs: ECS stops a draining service task only
/// while the running tasks stay at `minimumHealthyPercent` of the desired count, and starts its
/// replacement only within `maximumPercent` ("Draining Amazon ECS container instances").
async fn held_by(c: &Clients, cluster: &str, victims: &[Member]) -> Result<Vec<String>, CallError> {
    use aws_sdk_ecs::types::DesiredStatus;
    let mut arns = Vec::new();
    for v in victims {
        let out = c
            .ecs
            .list_tasks()
            .cluster(cluster)
            .container_instance(&v.arn)
            .desired_status(DesiredStatus::Running)
            .max_results(100)
            .send()
            .await
            .map_err(|e| call_error("ListTasks", e))?;
        arns.extend(out.task_arns().iter().cloned());
    }
    let mut names: Vec<String> = observe::describe_tasks(c, cluster, &arns)
        .await?
        .iter()
        .filter_map(|t| t.group()?.strip_prefix("service:").map(str::to_string))
        .collect();
    names.sort();
    names.dedup();
    let mut out = Vec::new();
    for svc in observe::describe_services(c, cluster, &names).await? {
        let conf = svc.deployment_configuration();
        let low = conf.and_then(|d| d.minimum_healthy_percent()).unwrap_or(100);
        let high = conf.and_then(|d| d.maximum_percent()).unwrap_or(200);
        if low < 100 {
            continue;
        }
        let name = svc.service_name().unwrap_or_default();
        let room = if high <= 100 {
            format!("its maximumPercent {high} leaves no room to start one")
        } else {
            "no instance outside the drain has room for one".to_string()
        };
        out.push(format!(
            "service {name} has minimumHealthyPercent {low}: ECS stops its task on a draining instance only once a replacement runs, and {room}; lower minimumHealthyPercent, raise maximumPercent or add room, or raise drain_timeout"
        ));
    }
    Ok(out)
}

async fn wait_empty(
    c: &Clients,
    cluster: &str,
    victims: &[Member],
    limit: Duration,
    fence: &Fence,
    cancel: &CancellationToken,
) -> Result<(), ActError> {
    let start = Instant::now();
    loop {
        fence.check()?;
        let busy = busy(c, cluster, victims, &HashSet::new()).await?;
        if busy.is_empty() {
            return Ok(());
        }
        if start.elapsed() >= limit {
            let held = victims.iter().filter(|v| busy.contains(&v.ec2_id)).cloned().collect::<Vec<_>>();
            let why = match held_by(c, cluster, &held).await {
                Ok(services) if !services.is_empty() => services.join("; "),
                Ok(_) => "raise drain_timeout if their tasks need longer to stop".to_string(),
                Err(e) => format!("raise drain_timeout if their tasks need longer to stop; the services holding them could not be read: {e}"),
            };
            return Err(ActError::DrainTimeout { busy, why });
        }
        tokio::select! {
            _ = tokio::time::sleep(DRAIN_POLL) => {}
            _ = cancel.cancelled() => return Err(ActError::Cancelled),
        }
    }
}
