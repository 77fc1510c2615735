//! The secondary interface of an instance: created idempotently for a lifecycle action, waited for,
//! attached; found again by its tags, detached and deleted. Every call has the SDK's timeouts; waits
//! are bounded and cut short by the cancellation token.

use crate::aws::{call_error, CallError};
use aws_sdk_ec2::types::{Filter, ResourceType, Tag, TagSpecification};
use std::collections::HashMap;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub const TAG_INSTANCE: &str = "opsd:instance-id";
pub const TAG_TOKEN: &str = "opsd:lifecycle-token";

/// Polling interval while waiting for an interface's status.
pub const POLL: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
pub enum EniError {
    #[error(transparent)]
    Aws(#[from] CallError),
    #[error("instance {0} was not found; it may already be terminated")]
    NoInstance(String),
    #[error("interface {eni} did not become {want} within {waited:?} (last status {status}); raise [lifecycle.eni] ready_timeout or check the subnet")]
    NotReady { eni: String, want: &'static str, status: String, waited: Duration },
    #[error("cancelled: opsd is stopping")]
    Cancelled,
}

/// What DescribeInstances says about an instance.
#[derive(Debug, Clone)]
pub struct InstanceInfo {
    pub zone: String,
    /// Interfaces attached now: device index → interface id.
    pub attached: HashMap<i32, String>,
}

/// An interface as DescribeNetworkInterfaces shows it.
#[derive(Debug, Clone)]
pub struct Eni {
    pub id: String,
    pub status: String,
    pub attachment: Option<(String, String, i32)>, // (attachment id, instance id, device index)
}

/// EC2 is eventually consistent: an instance just launched, or an interface just created, may be
/// `NotFound` for a while ("Eventual consistency in the Amazon EC2 API"). The lifecycle action was
/// verified by a heartbeat first, so its instance exists: a NotFound is waited out this long.
pub const NOT_FOUND_PATIENCE: Duration = Duration::from_secs(30);

pub async fn instance(
    ec2: &aws_sdk_ec2::Client,
    id: &str,
    cancel: &CancellationToken,
) -> Result<InstanceInfo, EniError> {
    let start = Instant::now();
    loop {
        match describe_instance(ec2, id).await {
            Err(EniError::NoInstance(_)) if start.elapsed() < NOT_FOUND_PATIENCE => {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = cancel.cancelled() => return Err(EniError::Cancelled),
                }
            }
            other => return other,
        }
    }
}

async fn describe_instance(ec2: &aws_sdk_ec2::Client, id: &str) -> Result<InstanceInfo, EniError> {
    let out = ec2.describe_instances().instance_ids(id).send().await;
    let out = match out {
        Ok(o) => o,
        Err(e) => {
            let e = call_error("DescribeInstances", e);
            if e.code_is("InvalidInstanceID.NotFound") {
                return Err(EniError::NoInstance(id.into()));
            }
            return Err(e.into());
        }
    };
    let inst = out
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .find(|i| i.instance_id() == Some(id))
        .ok_or_else(|| EniError::NoInstance(id.into()))?;
    let zone = inst.placement().and_then(|p| p.availability_zone()).unwrap_or_default().to_string();
    let attached = inst
        .network_interfaces()
        .iter()
        .filter_map(|n| Some((n.attachment()?.device_index()?, n.network_interface_id()?.to_string())))
        .collect();
    Ok(InstanceInfo { zone, attached })
}

/// Whether an instance is gone: not found, terminated or shutting down (the sweep's test; no waiting).
pub async fn instance_gone(ec2: &aws_sdk_ec2::Client, id: &str) -> Result<bool, CallError> {
    let state = instance_state(ec2, id).await?;
    Ok(state.is_none_or(|s| matches!(s.as_str(), "terminated" | "shutting-down")))
}

/// The instance's EC2 state (`pending`, `running`, …); None when EC2 does not know it.
pub async fn instance_state(ec2: &aws_sdk_ec2::Client, id: &str) -> Result<Option<String>, CallError> {
    match ec2.describe_instances().instance_ids(id).send().await {
        Ok(o) => Ok(o
            .reservations()
            .first()
            .and_then(|r| r.instances().first())
            .and_then(|i| Some(i.state()?.name()?.as_str().to_string()))),
        Err(e) => {
            let e = call_error("DescribeInstances", e);
            if e.code_is("InvalidInstanceID.NotFound") {
                Ok(None)
            } else {
                Err(e)
            }
        }
    }
}

/// The zone of each subnet that exists. One missing subnet (deleted, mistyped) does not hide the
/// others: the caller fails only if the instance's zone has none.
pub async fn subnet_zones(ec2: &aws_sdk_ec2::Client, ids: &[String]) -> Result<HashMap<String, String>, CallError> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let zones = |out: aws_sdk_ec2::operation::describe_subnets::DescribeSubnetsOutput| -> HashMap<String, String> {
        out.subnets()
            .iter()
            .filter_map(|s| Some((s.subnet_id()?.to_string(), s.availability_zone()?.to_string())))
            .collect()
    };
    match ec2.describe_subnets().set_subnet_ids(Some(ids.to_vec())).send().await {
        Ok(out) => Ok(zones(out)),
        Err(e) => {
            let e = call_error("DescribeSubnets", e);
            if !e.code_is("InvalidSubnetID.NotFound") || ids.len() == 1 {
                return Err(e);
            }
            let mut all = HashMap::new();
            for id in ids {
                match ec2.describe_subnets().subnet_ids(id).send().await {
                    Ok(out) => all.extend(zones(out)),
                    Err(err) => {
                        let err = call_error("DescribeSubnets", err);
                        if !err.code_is("InvalidSubnetID.NotFound") {
                            return Err(err);
                        }
                        tracing::warn!(
                            "subnet {id} does not exist; remove it from [lifecycle.eni] subnets or the hook's metadata"
                        );
                    }
                }
            }
            Ok(all)
        }
    }
}

/// Interfaces carrying tag `key` = `value`.
pub async fn tagged(ec2: &aws_sdk_ec2::Client, key: &str, value: &str) -> Result<Vec<Eni>, CallError> {
    let filter = Filter::builder().name(format!("tag:{key}")).values(value).build();
    let out = ec2.describe_network_interfaces().filters(filter).send().await;
    Ok(out.map_err(|e| call_error("DescribeNetworkInterfaces", e))?.network_interfaces().iter().map(to_eni).collect())
}

/// Every interface opsd tagged (for the sweep), with its instance tag.
pub async fn all_opsd(ec2: &aws_sdk_ec2::Client) -> Result<Vec<(Eni, String)>, CallError> {
    let filter = Filter::builder().name("tag-key").values(TAG_INSTANCE).build();
    let mut pages = ec2.describe_network_interfaces().filters(filter).max_results(1000).into_paginator().send();
    let mut out = Vec::new();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| call_error("DescribeNetworkInterfaces", e))?;
        for n in page.network_interfaces() {
            let inst = n.tag_set().iter().find(|t| t.key() == Some(TAG_INSTANCE)).and_then(|t| t.value());
            out.push((to_eni(n), inst.unwrap_or_default().to_string()));
        }
    }
    Ok(out)
}

fn to_eni(n: &aws_sdk_ec2::types::NetworkInterface) -> Eni {
    Eni {
        id: n.network_interface_id().unwrap_or_default().to_string(),
        status: n.status().map(|s| s.as_str().to_string()).unwrap_or_default(),
        attachment: n
            .attachment()
            .and_then(|a| Some((a.attachment_id()?.to_string(), a.instance_id()?.to_string(), a.device_index()?))),
    }
}

pub struct NewEni<'a> {
    pub subnet: &'a str,
    pub security_groups: &'a [String],
    pub description: &'a str,
    pub instance_id: &'a str,
    pub token: &'a str,
}

/// Create the interface for a lifecycle action. The ClientToken is derived from the action's token,
/// so a retried or redelivered action gets the same interface back, never a second one.
pub async fn create(ec2: &aws_sdk_ec2::Client, n: NewEni<'_>) -> Result<String, CallError> {
    let tags = TagSpecification::builder()
        .resource_type(ResourceType::NetworkInterface)
        .tags(Tag::builder().key(TAG_INSTANCE).value(n.instance_id).build())
        .tags(Tag::builder().key(TAG_TOKEN).value(n.token).build())
        .build();
    let out = ec2
        .create_network_interface()
        .subnet_id(n.subnet)
        .set_groups((!n.security_groups.is_empty()).then(|| n.security_groups.to_vec()))
        .description(n.description)
        .client_token(client_token(n.token))
        .tag_specifications(tags)
        .send()
        .await
        .map_err(|e| call_error("CreateNetworkInterface", e))?;
    Ok(out.network_interface().and_then(|i| i.network_interface_id()).unwrap_or_default().to_string())
}

/// EC2 client tokens are at most 64 ASCII characters; lifecycle tokens are UUIDs.
fn client_token(lifecycle_token: &str) -> String {
    let mut t = format!("opsd-{lifecycle_token}");
    t.truncate(64);
    t
}

pub async fn describe(ec2: &aws_sdk_ec2::Client, id: &str) -> Result<Option<Eni>, CallError> {
    let out = ec2.describe_network_interfaces().network_interface_ids(id).send().await;
    match out {
        Ok(o) => Ok(o.network_interfaces().first().map(to_eni)),
        Err(e) => {
            let e = call_error("DescribeNetworkInterfaces", e);
            if e.code_is("InvalidNetworkInterfaceID.NotFound") {
                Ok(None)
            } else {
                Err(e)
            }
        }
    }
}

/// Wait until the interface's status is `want` (bounded by `limit`, cut short by `cancel`).
pub async fn wait_status(
    ec2: &aws_sdk_ec2::Client,
    id: &str,
    want: &'static str,
    limit: Duration,
    cancel: &CancellationToken,
) -> Result<(), EniError> {
    let start = Instant::now();
    let mut last;
    loop {
        match describe(ec2, id).await? {
            Some(e) if e.status == want => return Ok(()),
            Some(e) => last = e.status,
            None => last = "gone".into(),
        }
        if start.elapsed() >= limit {
            return Err(EniError::NotReady { eni: id.into(), want, status: last, waited: limit });
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = cancel.cancelled() => return Err(EniError::Cancelled),
        }
    }
}

pub async fn attach(ec2: &aws_sdk_ec2::Client, eni: &str, instance: &str, index: i32) -> Result<String, CallError> {
    let out = ec2
        .attach_network_interface()
        .network_interface_id(eni)
        .instance_id(instance)
        .device_index(index)
        .send()
        .await
        .map_err(|e| call_error("AttachNetworkInterface", e))?;
    Ok(out.attachment_id().unwrap_or_default().to_string())
}

/// Detach (if attached), wait until `available`, delete. An interface already gone is success.
pub async fn remove(
    ec2: &aws_sdk_ec2::Client,
    eni: &Eni,
    limit: Duration,
    cancel: &CancellationToken,
) -> Result<(), EniError> {
    if let Some((attachment, _, _)) = &eni.attachment {
        let r = ec2.detach_network_interface().attachment_id(attachment).send().await;
        if let Err(e) = r {
            let e = call_error("DetachNetworkInterface", e);
            if !e.code_is("InvalidAttachmentID.NotFound") {
                return Err(e.into());
            }
        }
        match wait_status(ec2, &eni.id, "available", limit, cancel).await {
            Ok(()) => {}
            Err(EniError::NotReady { status, .. }) if status == "gone" => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    delete(ec2, &eni.id).await.map_err(EniError::from)
}

pub async fn delete(ec2: &aws_sdk_ec2::Client, id: &str) -> Result<(), CallError> {
    match ec2.delete_network_interface().network_interface_id(id).send().await {
        Ok(_) => Ok(()),
        Err(e) => {
            let e = call_error("DeleteNetworkInterface", e);
            if e.code_is("InvalidNetworkInterfaceID.NotFound") {
                Ok(())
            } else {
                Err(e)
            }
        }
    }
}
