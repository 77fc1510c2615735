//! The fleets the controller moves, one module per kind ([`spot`]: a Spot Fleet request, [`ec2`]:
//! an EC2 Fleet of type maintain, [`group`]: an Auto Scaling group) behind [`CapacityTarget`], with
//! one match per operation: describe, set the target, remove chosen instances, tell which are
//! already leaving. Targets are absolute, so a repeated change changes nothing twice.

pub mod ec2;
pub mod group;
pub mod spot;

use super::fence::Fence;
use super::Clients;
use crate::aws::{call_error, CallError};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How long a lowered fleet target may take to be applied (the request is `modifying` meanwhile)
/// before the victims are terminated: terminated earlier, the fleet could still replace them.
pub const TARGET_APPLY_TIMEOUT: Duration = Duration::from_secs(120);
/// How often a fleet is asked whether it applied a new target.
const APPLY_POLL: Duration = Duration::from_secs(2);

/// What the controller moves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CapacityTarget {
    /// ModifySpotFleetRequest on its TargetCapacity.
    SpotFleet(String),
    /// SetDesiredCapacity; scale-in by TerminateInstanceInAutoScalingGroup.
    AutoScalingGroup(String),
    /// ModifyFleet on its TotalTargetCapacity.
    Ec2Fleet(String),
}

impl std::fmt::Display for CapacityTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CapacityTarget::SpotFleet(id) => write!(f, "Spot Fleet request {id}"),
            CapacityTarget::AutoScalingGroup(name) => write!(f, "Auto Scaling group {name}"),
            CapacityTarget::Ec2Fleet(id) => write!(f, "EC2 Fleet {id}"),
        }
    }
}

/// A fleet's capacity and state, from one describe call.
#[derive(Debug, Clone, Default)]
pub struct FleetStatus {
    pub target: f64,
    pub fulfilled: f64,
    /// The request's state (`active`, `modifying`, …; a group is always `active`).
    pub state: String,
}

/// What a fleet says of itself: its status, types and instances.
#[derive(Debug, Clone, Default)]
pub struct FleetRaw {
    pub status: FleetStatus,
    /// Its instance types with their weights, each once.
    pub types: Vec<(String, f64)>,
    /// Its instances: EC2 id → instance type.
    pub members: HashMap<String, String>,
}

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error(transparent)]
    Aws(#[from] CallError),
    #[error("{0} was not found; check [capacity] and the region")]
    NotFound(CapacityTarget),
    #[error("{0} did not apply the lowered target within {TARGET_APPLY_TIMEOUT:?}; nothing terminated")]
    NotApplied(CapacityTarget),
    #[error("cancelled: opsd is stopping; nothing terminated")]
    Cancelled,
    /// This replica no longer leads: it takes no further step (the next leader finishes).
    #[error("fenced: {0}")]
    Fenced(#[from] crate::cluster::lease::Fenced),
}

/// A removal that failed, with the instances whose termination the fleet had already accepted
/// (they are never put back to work).
#[derive(Debug)]
pub struct RemoveFailed {
    pub error: FleetError,
    pub requested: Vec<String>,
}

impl From<FleetError> for RemoveFailed {
    fn from(error: FleetError) -> RemoveFailed {
        RemoveFailed { error, requested: Vec::new() }
    }
}

impl CapacityTarget {
    /// The fleet's target, fulfilled capacity, types, instances and state.
    pub async fn describe(&self, c: &Clients) -> Result<FleetRaw, FleetError> {
        match self {
            CapacityTarget::SpotFleet(id) => spot::describe(c, id).await,
            CapacityTarget::Ec2Fleet(id) => ec2::describe(c, id).await,
            CapacityTarget::AutoScalingGroup(name) => group::describe(c, name).await,
        }
    }

    /// The fleet's state and target capacity as it reports them now (one call; either may be
    /// absent while a change is being applied).
    pub async fn applied(&self, c: &Clients) -> Result<(Option<String>, Option<i32>), CallError> {
        match self {
            CapacityTarget::SpotFleet(id) => spot::applied(c, id).await,
            CapacityTarget::Ec2Fleet(id) => ec2::applied(c, id).await,
            CapacityTarget::AutoScalingGroup(name) => group::applied(c, name).await,
        }
    }

    /// Set the target capacity (absolute). On a fleet a lowered target never terminates anything by
    /// itself (noTermination); a group is only ever raised this way (see [`CapacityTarget::remove`]).
    pub async fn set_target(&self, c: &Clients, to: u32) -> Result<(), CallError> {
        match self {
            CapacityTarget::SpotFleet(id) => spot::set_target(c, id, to).await,
            CapacityTarget::Ec2Fleet(id) => ec2::set_target(c, id, to).await,
            CapacityTarget::AutoScalingGroup(name) => group::set_target(c, name, to).await,
        }
    }

    /// Lower the capacity from `from` to `to` by removing exactly `victims` (EC2 ids, drained).
    /// A fleet: the target first (noTermination, so the fleet neither picks victims of its own nor
    /// replaces these), waited for, then these terminated; the target goes back to `from` if that
    /// fails. A group: each terminated with the desired capacity decremented, in the group's own time.
    pub async fn remove(
        &self,
        c: &Clients,
        from: u32,
        to: u32,
        victims: &[String],
        fence: &Fence,
        cancel: &CancellationToken,
    ) -> Result<(), RemoveFailed> {
        match self {
            CapacityTarget::SpotFleet(_) | CapacityTarget::Ec2Fleet(_) => {
                self.lower_then_terminate(c, from, to, victims, fence, cancel).await
            }
            CapacityTarget::AutoScalingGroup(_) => group::remove(c, victims, fence).await,
        }
    }

    /// The instances among `ids` on their way out of the fleet (a group's `Terminating…`), which
    /// must get no new task.
    pub async fn leaving(&self, c: &Clients, ids: &[String]) -> Result<HashSet<String>, CallError> {
        match self {
            CapacityTarget::AutoScalingGroup(_) => group::terminating(c, ids).await,
            CapacityTarget::SpotFleet(_) | CapacityTarget::Ec2Fleet(_) => Ok(HashSet::new()),
        }
    }

    async fn lower_then_terminate(
        &self,
        c: &Clients,
        from: u32,
        to: u32,
        victims: &[String],
        fence: &Fence,
        cancel: &CancellationToken,
    ) -> Result<(), RemoveFailed> {
        fence.confirm().await.map_err(FleetError::from)?;
        fence.bounded(self.set_target(c, to)).await.map_err(FleetError::from)?.map_err(FleetError::from)?;
        if let Err(e) = self.wait_applied(c, to, cancel).await {
            self.restore(c, from, fence, "").await;
            return Err(e.into());
        }
        // Applying may take a while: a leader that lost its lease meanwhile terminates nothing
        // (and restores nothing: the next leader's decisions own the target now).
        fence.confirm().await.map_err(FleetError::from)?;
        let call = c.ec2.terminate_instances().set_instance_ids(Some(victims.to_vec())).send();
        let r = fence.bounded(call).await.map_err(FleetError::from)?;
        if let Err(e) = r.map_err(|e| call_error("TerminateInstances", e)) {
            // Some may be gone, some not: the target goes back up (never short of capacity), and the
            // caller puts those still running back to work.
            let note = "; the fleet keeps its instances (noTermination) and the next decision sets the target again";
            self.restore(c, from, fence, note).await;
            return Err(FleetError::from(e).into());
        }
        Ok(())
    }

    /// Put the target back to `from` after a failed removal (logged, with `note`, if that fails too).
    async fn restore(&self, c: &Clients, from: u32, fence: &Fence, note: &str) {
        if let Err(f) = fence.confirm().await {
            tracing::warn!(target = %self, "capacity: the target of {self} is not restored to {from}: {f}");
            return;
        }
        let back = match fence.bounded(self.set_target(c, from)).await {
            Ok(r) => r,
            Err(f) => {
                tracing::warn!(target = %self, "capacity: the target of {self} is not restored to {from}: {f}");
                return;
            }
        };
        if let Err(back) = back {
            tracing::error!(target = %self, "capacity: restoring the target of {self} to {from} failed: {back}{note}");
        }
    }

    /// Wait until the fleet reports `to` as its target and is no longer `modifying`.
    async fn wait_applied(&self, c: &Clients, to: u32, cancel: &CancellationToken) -> Result<(), FleetError> {
        let start = Instant::now();
        loop {
            let (state, now) = self.applied(c).await?;
            if now == Some(to as i32) && state.as_deref() != Some("modifying") {
                return Ok(());
            }
            if start.elapsed() >= TARGET_APPLY_TIMEOUT {
                return Err(FleetError::NotApplied(self.clone()));
            }
            tokio::select! {
                _ = tokio::time::sleep(APPLY_POLL) => {}
                _ = cancel.cancelled() => return Err(FleetError::Cancelled),
            }
        }
    }
}

/// Add an instance type the first time it is named.
fn add_type(types: &mut Vec<(String, f64)>, name: &str, weight: f64) {
    if !types.iter().any(|(n, _)| n == name) {
        types.push((name.to_string(), weight));
    }
}

/// Every page of a fleet's instance listing, as EC2 id → instance type. `page` fetches one page
/// from a token and returns its (id, type) pairs and the next token.
async fn all_pages<F, Fut>(mut page: F) -> Result<HashMap<String, String>, CallError>
where
    F: FnMut(Option<String>) -> Fut,
    Fut: Future<Output = Result<(Vec<(String, String)>, Option<String>), CallError>>,
{
    let mut members = HashMap::new();
    let mut token: Option<String> = None;
    loop {
        let (instances, next) = page(token.take()).await?;
        members.extend(instances);
        match next {
            Some(t) if !t.is_empty() => token = Some(t),
            _ => return Ok(members),
        }
    }
}

/// The types one launch template config of a fleet names: its overrides' (type, weight), or, when
/// no override names a type, the launch template's own (weight 1).
async fn config_types(
    c: &Clients,
    types: &mut Vec<(String, f64)>,
    overrides: Vec<(Option<&str>, Option<f64>)>,
    spec: Option<&aws_sdk_ec2::types::FleetLaunchTemplateSpecification>,
) -> Result<(), CallError> {
    let mut any = false;
    for (t, weight) in overrides {
        if let Some(t) = t {
            any = true;
            add_type(types, t, weight.unwrap_or(1.0));
        }
    }
    if let (false, Some(spec)) = (any, spec) {
        if let Some(t) =
            template_type(c, spec.launch_template_id(), spec.launch_template_name(), spec.version()).await?
        {
            add_type(types, &t, 1.0);
        }
    }
    Ok(())
}

/// The instance type a launch template's version (default: `$Default`) names, if any.
async fn template_type(
    c: &Clients,
    id: Option<&str>,
    name: Option<&str>,
    version: Option<&str>,
) -> Result<Option<String>, CallError> {
    let req = c.ec2.describe_launch_template_versions();
    let req = match (id, name) {
        (Some(id), _) => req.launch_template_id(id),
        (None, Some(name)) => req.launch_template_name(name),
        _ => return Ok(None),
    };
    let v = match req.versions(version.unwrap_or("$Default")).send().await {
        Ok(v) => v,
        Err(e) => {
            // Not fatal: the types of running instances are known anyway; without this one the
            // controller cannot scale out from no instance of it (say so, with what to do).
            let e = call_error("DescribeLaunchTemplateVersions", e);
            tracing::warn!(
                "capacity: cannot read the instance type of launch template {}: {e}; allow ec2:DescribeLaunchTemplateVersions",
                id.or(name).unwrap_or_default()
            );
            return Ok(None);
        }
    };
    Ok(v.launch_template_versions()
        .first()
        .and_then(|v| v.launch_template_data()?.instance_type())
        .map(|t| t.as_str().to_string()))
}
