//! Carrying out a decision on the Spot Fleet. Targets are absolute (ModifySpotFleetRequest sets the
//! target capacity to a value, not by a delta), so a decision repeated after a crash changes nothing
//! twice. Scale-in: lower the target with ExcessCapacityTerminationPolicy=noTermination (the fleet
//! picks no victims of its own), drain the chosen container instances, wait until their tasks have
//! stopped, then terminate exactly those. An instance that still runs tasks is never terminated.

use super::observe::{Clients, Member};
use crate::aws::{call_error, CallError};
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

pub async fn set_target(c: &Clients, fleet: &str, to: u32, scale_in: bool) -> Result<(), CallError> {
    let mut req = c.ec2.modify_spot_fleet_request().spot_fleet_request_id(fleet).target_capacity(to as i32);
    if scale_in {
        req = req.excess_capacity_termination_policy(ExcessCapacityTerminationPolicy::NoTermination);
    }
    req.send().await.map_err(|e| call_error("ModifySpotFleetRequest", e))?;
    Ok(())
}

/// A scale-in to carry out.
pub struct ScaleIn<'a> {
    pub cluster: &'a str,
    pub fleet: &'a str,
    /// The new target capacity.
    pub to: u32,
    pub victims: &'a [Member],
    pub drain: bool,
    pub drain_timeout: Duration,
}

/// Drain the victims (when `drain`), wait for their tasks to stop, lower the target, terminate them.
pub async fn scale_in(c: &Clients, p: ScaleIn<'_>, cancel: &CancellationToken) -> Result<(), ActError> {
    let ScaleIn { cluster, fleet, to, victims, drain, drain_timeout } = p;
    let arns: Vec<String> = victims.iter().map(|v| v.arn.clone()).collect();
    if drain {
        set_state(c, cluster, &arns, ContainerInstanceStatus::Draining).await?;
        if let Err(e) = wait_empty(c, cluster, &arns, drain_timeout, cancel).await {
            // Put them back to work: a scale-in that cannot empty its instances does not happen.
            if let Err(back) = set_state(c, cluster, &arns, ContainerInstanceStatus::Active).await {
                tracing::error!("capacity: setting {arns:?} back to ACTIVE failed: {back}");
            }
            return Err(e);
        }
    } else {
        // Without draining, only instances with no task at all may go.
        let busy: Vec<String> = still_running(c, cluster, &arns).await?;
        if !busy.is_empty() {
            return Err(ActError::DrainTimeout(busy));
        }
    }
    set_target(c, fleet, to, true).await?;
    let ids: Vec<String> = victims.iter().map(|v| v.ec2_id.clone()).collect();
    c.ec2
        .terminate_instances()
        .set_instance_ids(Some(ids))
        .send()
        .await
        .map_err(|e| call_error("TerminateInstances", e))?;
    Ok(())
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

/// Container instances among `arns` that still run or start tasks.
async fn still_running(c: &Clients, cluster: &str, arns: &[String]) -> Result<Vec<String>, CallError> {
    let out = c
        .ecs
        .describe_container_instances()
        .cluster(cluster)
        .set_container_instances(Some(arns.to_vec()))
        .send()
        .await
        .map_err(|e| call_error("DescribeContainerInstances", e))?;
    Ok(out
        .container_instances()
        .iter()
        .filter(|ci| ci.running_tasks_count() + ci.pending_tasks_count() > 0)
        .map(|ci| ci.ec2_instance_id().unwrap_or_default().to_string())
        .collect())
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
        let busy = still_running(c, cluster, arns).await?;
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
