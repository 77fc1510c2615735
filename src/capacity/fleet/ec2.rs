//! An EC2 Fleet of type maintain: DescribeFleets (TotalTargetCapacity, FulfilledCapacity, state,
//! the types of its overrides or launch template), DescribeFleetInstances, ModifyFleet.

use super::{all_pages, config_types, CapacityTarget, FleetError, FleetRaw, FleetStatus};
use crate::aws::{call_error, CallError};
use crate::capacity::Clients;
use aws_sdk_ec2::types::{FleetData, FleetExcessCapacityTerminationPolicy, TargetCapacitySpecificationRequest};

/// The fleet as DescribeFleets shows it (None when it lists none): the one call both [`describe`]
/// and [`applied`] make.
async fn fetch(c: &Clients, id: &str) -> Result<Option<FleetData>, CallError> {
    let out = c.ec2.describe_fleets().fleet_ids(id).send().await.map_err(|e| call_error("DescribeFleets", e))?;
    Ok(out.fleets().first().cloned())
}

/// The fleet, or why it cannot be observed (not found, malformed id).
async fn request(c: &Clients, id: &str) -> Result<FleetData, FleetError> {
    let missing = || FleetError::NotFound(CapacityTarget::Ec2Fleet(id.into()));
    match fetch(c, id).await {
        Err(e) if e.code.as_deref().is_some_and(|c| c.contains("NotFound") || c.contains("Malformed")) => {
            Err(missing())
        }
        Err(e) => Err(e.into()),
        Ok(f) => f.ok_or_else(missing),
    }
}

fn status_of(f: &FleetData) -> FleetStatus {
    FleetStatus {
        target: f64::from(f.target_capacity_specification().and_then(|t| t.total_target_capacity()).unwrap_or(0)),
        fulfilled: f.fulfilled_capacity().unwrap_or(0.0),
        state: f.fleet_state().map(|s| s.as_str().to_string()).unwrap_or_default(),
    }
}

/// The fleet's state and target capacity as it reports them now (either may be absent).
pub async fn applied(c: &Clients, id: &str) -> Result<(Option<String>, Option<i32>), CallError> {
    let f = fetch(c, id).await?;
    Ok((
        f.as_ref().and_then(|f| f.fleet_state()).map(|s| s.as_str().to_string()),
        f.as_ref().and_then(|f| f.target_capacity_specification()).and_then(|t| t.total_target_capacity()),
    ))
}

pub async fn describe(c: &Clients, id: &str) -> Result<FleetRaw, FleetError> {
    let f = request(c, id).await?;
    let mut types: Vec<(String, f64)> = Vec::new();
    for cfg in f.launch_template_configs() {
        let named = cfg.overrides().iter().map(|o| (o.instance_type().map(|t| t.as_str()), o.weighted_capacity()));
        config_types(c, &mut types, named.collect(), cfg.launch_template_specification()).await?;
    }
    let members = members(c, id).await?;
    Ok(FleetRaw { status: status_of(&f), types, members })
}

/// The fleet's active instances, every page.
async fn members(c: &Clients, id: &str) -> Result<std::collections::HashMap<String, String>, CallError> {
    all_pages(|token| async move {
        let p = c
            .ec2
            .describe_fleet_instances()
            .fleet_id(id)
            .set_next_token(token)
            .send()
            .await
            .map_err(|e| call_error("DescribeFleetInstances", e))?;
        let ids = p.active_instances().iter().filter_map(|i| {
            i.instance_id().map(|iid| (iid.to_string(), i.instance_type().unwrap_or_default().to_string()))
        });
        Ok((ids.collect(), p.next_token().map(str::to_string)))
    })
    .await
}

pub async fn set_target(c: &Clients, id: &str, to: u32) -> Result<(), CallError> {
    let spec = TargetCapacitySpecificationRequest::builder().total_target_capacity(to as i32).build();
    c.ec2
        .modify_fleet()
        .fleet_id(id)
        .target_capacity_specification(spec)
        .excess_capacity_termination_policy(FleetExcessCapacityTerminationPolicy::NoTermination)
        .send()
        .await
        .map_err(|e| call_error("ModifyFleet", e))?;
    Ok(())
}
