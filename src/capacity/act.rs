//! Carrying out a decision on the Spot Fleet. Targets are absolute (ModifySpotFleetRequest sets the
//! target capacity to a value, not by a delta), so a decision repeated after a crash changes nothing
//! twice. Scale-in: lower the target with ExcessCapacityTerminationPolicy=noTermination (the fleet
//! picks no victims of its own), drain the chosen container instances, wait until their tasks have
//! stopped, then terminate exactly those. An instance that still runs tasks is never terminated.

use super::observe::{self, Clients, Member};
use crate::aws::{call_error, CallError};
use crate::config::CapacityTarget;
use aws_sdk_ec2::types::ExcessCapacityTerminationPolicy;
use aws_sdk_ecs::types::ContainerInstanceStatus;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const DRAIN_POLL: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum ActError {
    #[error(transparent)]
    Aws(#[from] CallError),
    #[error("instances {0:?} still run tasks after the drain timeout; set back to ACTIVE, nothing terminated")]
    DrainTimeout(Vec<String>),
    #[error("cancelled: opsd is stopping; drained instances were set back to ACTIVE")]
    Cancelled,
}

/// Set the target capacity (absolute). On a Spot Fleet a lowered target never terminates anything
/// by itself (noTermination); an Auto Scaling group is only ever raised this way (scale-in goes
/// through TerminateInstanceInAutoScalingGroup, instance by instance).
pub async fn set_target(c: &Clients, target: &CapacityTarget, to: u32) -> Result<(), CallError> {
    match target {
        CapacityTarget::SpotFleet(id) => {
            c.ec2
                .modify_spot_fleet_request()
                .spot_fleet_request_id(id)
                .target_capacity(to as i32)
                .excess_capacity_termination_policy(ExcessCapacityTerminationPolicy::NoTermination)
                .send()
                .await
                .map_err(|e| call_error("ModifySpotFleetRequest", e))?;
        }
        CapacityTarget::Ec2Fleet(id) => {
            let spec = aws_sdk_ec2::types::TargetCapacitySpecificationRequest::builder()
                .total_target_capacity(to as i32)
                .build();
            c.ec2
                .modify_fleet()
                .fleet_id(id)
                .target_capacity_specification(spec)
                .excess_capacity_termination_policy(
                    aws_sdk_ec2::types::FleetExcessCapacityTerminationPolicy::NoTermination,
                )
                .send()
                .await
                .map_err(|e| call_error("ModifyFleet", e))?;
        }
        CapacityTarget::AutoScalingGroup(name) => {
            c.asg
                .set_desired_capacity()
                .auto_scaling_group_name(name)
                .desired_capacity(to as i32)
                .honor_cooldown(false)
                .send()
                .await
                .map_err(|e| call_error("SetDesiredCapacity", e))?;
        }
    }
    Ok(())
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
}

/// Drain the victims (when `drain`), wait for their tasks to stop, lower the target, terminate them.
pub async fn scale_in(c: &Clients, p: ScaleIn<'_>, cancel: &CancellationToken) -> Result<(), ActError> {
    let ScaleIn { cluster, target, from, to, victims, drain, drain_timeout } = p;
    let arns: Vec<String> = victims.iter().map(|v| v.arn.clone()).collect();
    // DRAINING first in every case: no new task may land on an instance about to go.
    set_state(c, cluster, &arns, ContainerInstanceStatus::Draining).await?;
    let emptied = if drain {
        wait_empty(c, cluster, &arns, drain_timeout, cancel).await
    } else {
        // Without draining, only instances that run nothing at all may go.
        match busy(c, cluster, &arns).await {
            Ok(b) if b.is_empty() => Ok(()),
            Ok(b) => Err(ActError::DrainTimeout(b)),
            Err(e) => Err(e.into()),
        }
    };
    if let Err(e) = emptied {
        // Put them back to work: a scale-in that cannot empty its instances does not happen.
        reactivate(c, cluster, &arns).await;
        return Err(e);
    }
    let done = match target {
        CapacityTarget::SpotFleet(_) | CapacityTarget::Ec2Fleet(_) => {
            set_target(c, target, to).await?;
            let ids: Vec<String> = victims.iter().map(|v| v.ec2_id.clone()).collect();
            let r = c.ec2.terminate_instances().set_instance_ids(Some(ids)).send().await;
            match r.map_err(|e| call_error("TerminateInstances", e)) {
                Ok(_) => Ok(()),
                Err(e) => {
                    // Nothing was removed: the target goes back up, the instances back to work.
                    if let Err(back) = set_target(c, target, from).await {
                        tracing::error!("capacity: restoring the target to {from} failed: {back}");
                    }
                    Err(e)
                }
            }
        }
        CapacityTarget::AutoScalingGroup(_) => {
            // Exactly these instances, and the desired capacity down by each.
            let mut result = Ok(());
            for v in victims {
                let r = c
                    .asg
                    .terminate_instance_in_auto_scaling_group()
                    .instance_id(&v.ec2_id)
                    .should_decrement_desired_capacity(true)
                    .send()
                    .await;
                if let Err(e) = r.map_err(|e| call_error("TerminateInstanceInAutoScalingGroup", e)) {
                    result = Err(e);
                    break;
                }
            }
            result
        }
    };
    if let Err(e) = done {
        reactivate(c, cluster, &arns).await;
        return Err(e.into());
    }
    Ok(())
}

async fn reactivate(c: &Clients, cluster: &str, arns: &[String]) {
    if let Err(e) = set_state(c, cluster, arns, ContainerInstanceStatus::Active).await {
        tracing::error!("capacity: setting {arns:?} back to ACTIVE failed: {e}; set them ACTIVE by hand");
    }
}

async fn set_state(
    c: &Clients,
    cluster: &str,
    arns: &[String],
    status: ContainerInstanceStatus,
) -> Result<(), CallError> {
    c.ecs
        .update_container_instances_state()
        .cluster(cluster)
        .set_container_instances(Some(arns.to_vec()))
        .status(status)
        .send()
        .await
        .map_err(|e| call_error("UpdateContainerInstancesState", e))?;
    Ok(())
}

/// EC2 ids of the container instances among `arns` with a task not yet STOPPED. A drained
/// instance's tasks are desired STOPPED at once, while their containers may take a while to stop
/// (connection draining, stop timeout): the tasks' last status is what counts, not the counts.
async fn busy(c: &Clients, cluster: &str, arns: &[String]) -> Result<Vec<String>, CallError> {
    use aws_sdk_ecs::types::DesiredStatus;
    let mut busy = Vec::new();
    for ci in &observe::describe_container_instances(c, cluster, arns).await? {
        let arn = ci.container_instance_arn().unwrap_or_default();
        let mut task_arns = Vec::new();
        for desired in [DesiredStatus::Running, DesiredStatus::Stopped] {
            let l = c
                .ecs
                .list_tasks()
                .cluster(cluster)
                .container_instance(arn)
                .desired_status(desired)
                .send()
                .await
                .map_err(|e| call_error("ListTasks", e))?;
            task_arns.extend(l.task_arns().iter().cloned());
        }
        let live = ci.running_tasks_count() + ci.pending_tasks_count() > 0
            || observe::describe_tasks(c, cluster, &task_arns)
                .await?
                .iter()
                .any(|t| t.last_status() != Some("STOPPED"));
        if live {
            busy.push(ci.ec2_instance_id().unwrap_or_default().to_string());
        }
    }
    Ok(busy)
}

async fn wait_empty(
    c: &Clients,
    cluster: &str,
    arns: &[String],
    limit: Duration,
    cancel: &CancellationToken,
) -> Result<(), ActError> {
    let start = Instant::now();
    loop {
        let busy = busy(c, cluster, arns).await?;
        if busy.is_empty() {
            return Ok(());
        }
        if start.elapsed() >= limit {
            return Err(ActError::DrainTimeout(busy));
        }
        tokio::select! {
            _ = tokio::time::sleep(DRAIN_POLL) => {}
            _ = cancel.cancelled() => return Err(ActError::Cancelled),
        }
    }
}
