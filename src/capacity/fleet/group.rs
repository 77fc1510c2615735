//! An Auto Scaling group as a fleet: the desired capacity is the target, instances InService the
//! fulfilled capacity, every instance of weight 1 (or its override's). Raised with
//! SetDesiredCapacity; lowered instance by instance with TerminateInstanceInAutoScalingGroup.

use super::{add_type, template_type, CapacityTarget, FleetError, FleetRaw, FleetStatus, RemoveFailed};
use crate::aws::{call_error, CallError};
use crate::capacity::fence::Fence;
use crate::capacity::Clients;
use aws_sdk_autoscaling::types::AutoScalingGroup;
use std::collections::{HashMap, HashSet};

/// DescribeAutoScalingInstances takes at most 50 instance ids per call.
const DESCRIBE_BATCH: usize = 50;

async fn request(c: &Clients, name: &str) -> Result<AutoScalingGroup, FleetError> {
    let out = c
        .asg
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(name)
        .send()
        .await
        .map_err(|e| call_error("DescribeAutoScalingGroups", e))?;
    out.auto_scaling_groups()
        .first()
        .cloned()
        .ok_or_else(|| FleetError::NotFound(CapacityTarget::AutoScalingGroup(name.into())))
}

/// An instance type's weight in the group: its override's, else 1.
fn weight_of(g: &AutoScalingGroup, t: &str) -> f64 {
    g.mixed_instances_policy()
        .and_then(|m| m.launch_template())
        .map(|lt| lt.overrides())
        .and_then(|o| o.iter().find(|o| o.instance_type() == Some(t)).and_then(|o| o.weighted_capacity()))
        .and_then(|w| w.parse().ok())
        .unwrap_or(1.0)
}

fn status_of(g: &AutoScalingGroup) -> FleetStatus {
    let in_service = g.instances().iter().filter(|i| i.lifecycle_state().is_some_and(|s| s.as_str() == "InService"));
    FleetStatus {
        target: f64::from(g.desired_capacity().unwrap_or(0)),
        // (+ 0.0: an empty f64 sum is -0.0, which status would print as "-0".)
        fulfilled: in_service.map(|i| weight_of(g, i.instance_type().unwrap_or_default())).sum::<f64>() + 0.0,
        state: "active".into(),
    }
}

/// A group applies its desired capacity at once: its state and desired capacity now.
pub async fn applied(c: &Clients, name: &str) -> Result<(Option<String>, Option<i32>), CallError> {
    match request(c, name).await {
        Ok(g) => Ok((Some("active".into()), g.desired_capacity())),
        Err(FleetError::Aws(e)) => Err(e),
        Err(_) => Ok((None, None)),
    }
}

pub async fn describe(c: &Clients, name: &str) -> Result<FleetRaw, FleetError> {
    let g = request(c, name).await?;
    let mut types: Vec<(String, f64)> = Vec::new();
    let mut members = HashMap::new();
    for i in g.instances() {
        let t = i.instance_type().unwrap_or_default().to_string();
        members.insert(i.instance_id().unwrap_or_default().to_string(), t.clone());
        if !t.is_empty() {
            add_type(&mut types, &t, weight_of(&g, &t));
        }
    }
    if let Some(lc) = g.launch_configuration_name() {
        let out = c
            .asg
            .describe_launch_configurations()
            .launch_configuration_names(lc)
            .send()
            .await
            .map_err(|e| call_error("DescribeLaunchConfigurations", e))?;
        if let Some(t) = out.launch_configurations().first().and_then(|l| l.instance_type()) {
            add_type(&mut types, t, 1.0);
        }
    }
    let mixed = g.mixed_instances_policy().and_then(|m| m.launch_template());
    for o in mixed.map(|lt| lt.overrides()).unwrap_or_default() {
        if let Some(t) = o.instance_type() {
            add_type(&mut types, t, weight_of(&g, t));
        }
    }
    // A launch template (the group's own, or the mixed policy's without typed overrides) names
    // the type: needed to scale out a group that has no instance yet.
    let spec =
        g.launch_template().map(|s| (s.launch_template_id(), s.launch_template_name(), s.version())).or_else(|| {
            mixed
                .filter(|lt| lt.overrides().iter().all(|o| o.instance_type().is_none()))
                .and_then(|lt| lt.launch_template_specification())
                .map(|s| (s.launch_template_id(), s.launch_template_name(), s.version()))
        });
    if let Some((id, name, version)) = spec {
        if let Some(t) = template_type(c, id, name, version).await? {
            add_type(&mut types, &t, weight_of(&g, &t));
        }
    }
    Ok(FleetRaw { status: status_of(&g), types, members })
}

pub async fn set_target(c: &Clients, name: &str, to: u32) -> Result<(), CallError> {
    c.asg
        .set_desired_capacity()
        .auto_scaling_group_name(name)
        .desired_capacity(to as i32)
        .honor_cooldown(false)
        .send()
        .await
        .map_err(|e| call_error("SetDesiredCapacity", e))?;
    Ok(())
}

/// Exactly these instances, and the desired capacity down by each. The group terminates them in
/// its own time (a termination hook may hold them); on a failure, those already accepted are named.
pub async fn remove(c: &Clients, victims: &[String], fence: &Fence) -> Result<(), RemoveFailed> {
    let mut requested = Vec::new();
    for id in victims {
        if let Err(f) = fence.confirm().await {
            return Err(RemoveFailed { error: f.into(), requested });
        }
        let call = c
            .asg
            .terminate_instance_in_auto_scaling_group()
            .instance_id(id)
            .should_decrement_desired_capacity(true)
            .send();
        let r = match fence.bounded(call).await {
            Ok(r) => r,
            Err(f) => return Err(RemoveFailed { error: f.into(), requested }),
        };
        if let Err(e) = r.map_err(|e| call_error("TerminateInstanceInAutoScalingGroup", e)) {
            return Err(RemoveFailed { error: e.into(), requested });
        }
        requested.push(id.clone());
    }
    Ok(())
}

/// The instances among `ids` that their group is terminating (lifecycle state `Terminating…`).
pub async fn terminating(c: &Clients, ids: &[String]) -> Result<HashSet<String>, CallError> {
    let mut leaving = HashSet::new();
    for chunk in ids.chunks(DESCRIBE_BATCH) {
        let out = c
            .asg
            .describe_auto_scaling_instances()
            .set_instance_ids(Some(chunk.to_vec()))
            .send()
            .await
            .map_err(|e| call_error("DescribeAutoScalingInstances", e))?;
        for i in out.auto_scaling_instances() {
            if i.lifecycle_state().is_some_and(|s| s.starts_with("Terminat")) {
                leaving.insert(i.instance_id().unwrap_or_default().to_string());
            }
        }
    }
    Ok(leaving)
}
