//! A Spot Fleet request: DescribeSpotFleetRequests (target, fulfilled, state, launch
//! specifications and template configs), DescribeSpotFleetInstances, ModifySpotFleetRequest.

use super::{add_type, all_pages, config_types, CapacityTarget, FleetError, FleetRaw, FleetStatus};
use crate::aws::{call_error, CallError};
use crate::capacity::Clients;
use aws_sdk_ec2::types::{ExcessCapacityTerminationPolicy, SpotFleetRequestConfig};

/// The request as DescribeSpotFleetRequests shows it (None when it lists none): the one call both
/// [`describe`] and [`applied`] make.
async fn fetch(c: &Clients, id: &str) -> Result<Option<SpotFleetRequestConfig>, CallError> {
    let out = c
        .ec2
        .describe_spot_fleet_requests()
        .spot_fleet_request_ids(id)
        .send()
        .await
        .map_err(|e| call_error("DescribeSpotFleetRequests", e))?;
    Ok(out.spot_fleet_request_configs().first().cloned())
}

/// The request, or why it cannot be observed (not found, malformed id, no config).
async fn request(c: &Clients, id: &str) -> Result<SpotFleetRequestConfig, FleetError> {
    let missing = || FleetError::NotFound(CapacityTarget::SpotFleet(id.into()));
    match fetch(c, id).await {
        Err(e)
            if e.code
                .as_deref()
                .is_some_and(|c| c.contains("NotFound") || c == "InvalidSpotFleetRequestId.Malformed") =>
        {
            Err(missing())
        }
        Err(e) => Err(e.into()),
        Ok(Some(cfg)) if cfg.spot_fleet_request_config().is_some() => Ok(cfg),
        Ok(_) => Err(missing()),
    }
}

fn status_of(cfg: &SpotFleetRequestConfig) -> FleetStatus {
    let conf = cfg.spot_fleet_request_config();
    FleetStatus {
        target: f64::from(conf.and_then(|c| c.target_capacity()).unwrap_or(0)),
        fulfilled: conf.and_then(|c| c.fulfilled_capacity()).unwrap_or(0.0),
        state: cfg.spot_fleet_request_state().map(|s| s.as_str().to_string()).unwrap_or_default(),
    }
}

/// The request's state and target capacity as it reports them now (either may be absent).
pub async fn applied(c: &Clients, id: &str) -> Result<(Option<String>, Option<i32>), CallError> {
    let cfg = fetch(c, id).await?;
    Ok((
        cfg.as_ref().and_then(|c| c.spot_fleet_request_state()).map(|s| s.as_str().to_string()),
        cfg.as_ref().and_then(|c| c.spot_fleet_request_config()).and_then(|c| c.target_capacity()),
    ))
}

pub async fn describe(c: &Clients, id: &str) -> Result<FleetRaw, FleetError> {
    let cfg = request(c, id).await?;
    let mut types: Vec<(String, f64)> = Vec::new();
    if let Some(conf) = cfg.spot_fleet_request_config() {
        for spec in conf.launch_specifications() {
            if let Some(t) = spec.instance_type() {
                add_type(&mut types, t.as_str(), spec.weighted_capacity().unwrap_or(1.0));
            }
        }
        for ltc in conf.launch_template_configs() {
            let named = ltc.overrides().iter().map(|o| (o.instance_type().map(|t| t.as_str()), o.weighted_capacity()));
            config_types(c, &mut types, named.collect(), ltc.launch_template_specification()).await?;
        }
    }
    let members = members(c, id).await?;
    Ok(FleetRaw { status: status_of(&cfg), types, members })
}

/// The request's active instances, every page.
async fn members(c: &Clients, id: &str) -> Result<std::collections::HashMap<String, String>, CallError> {
    all_pages(|token| async move {
        let p = c
            .ec2
            .describe_spot_fleet_instances()
            .spot_fleet_request_id(id)
            .set_next_token(token)
            .send()
            .await
            .map_err(|e| call_error("DescribeSpotFleetInstances", e))?;
        let ids = p.active_instances().iter().filter_map(|i| {
            i.instance_id().map(|iid| (iid.to_string(), i.instance_type().unwrap_or_default().to_string()))
        });
        Ok((ids.collect(), p.next_token().map(str::to_string)))
    })
    .await
}

pub async fn set_target(c: &Clients, id: &str, to: u32) -> Result<(), CallError> {
    c.ec2
        .modify_spot_fleet_request()
        .spot_fleet_request_id(id)
        .target_capacity(to as i32)
        .excess_capacity_termination_policy(ExcessCapacityTerminationPolicy::NoTermination)
        .send()
        .await
        .map_err(|e| call_error("ModifySpotFleetRequest", e))?;
    Ok(())
}
