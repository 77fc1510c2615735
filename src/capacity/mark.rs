//! The mark opsd puts on the container instances it sets DRAINING (an ECS attribute), so that an
//! undo, or the recovery after a crash, sets back to ACTIVE only what opsd itself drained: a drain
//! by a Spot interruption (the ECS agent's) or by an operator is never cancelled.

use super::Clients;
use crate::aws::{call_error, CallError};
use aws_sdk_ecs::types::{Attribute, ContainerInstance, TargetType};

/// The attribute's name; its value says when opsd drained the instance.
pub const NAME: &str = "opsd.drained";
/// PutAttributes and DeleteAttributes take at most 10 attributes per call.
const BATCH: usize = 10;

fn attribute(arn: &str, value: Option<&str>) -> Attribute {
    Attribute::builder()
        .name(NAME)
        .set_value(value.map(str::to_string))
        .target_type(TargetType::ContainerInstance)
        .target_id(arn)
        .build()
        .expect("name is set")
}

/// Mark `arns` as drained by opsd (after its UpdateContainerInstancesState succeeded for them).
pub async fn put(c: &Clients, cluster: &str, arns: &[String]) -> Result<(), CallError> {
    let value = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
    for chunk in arns.chunks(BATCH) {
        let attrs = chunk.iter().map(|a| attribute(a, Some(&value))).collect();
        c.ecs
            .put_attributes()
            .cluster(cluster)
            .set_attributes(Some(attrs))
            .send()
            .await
            .map_err(|e| call_error("PutAttributes", e))?;
    }
    Ok(())
}

/// The value of opsd's mark on a described container instance, if it carries one.
pub fn of(ci: &ContainerInstance) -> Option<&str> {
    ci.attributes().iter().find(|a| a.name() == NAME).map(|a| a.value().unwrap_or_default())
}

/// Remove the mark from instances set back to ACTIVE (by name and target: AWS takes no value for
/// a custom attribute's deletion).
pub async fn clear(c: &Clients, cluster: &str, marked: &[(String, String)]) -> Result<(), CallError> {
    for chunk in marked.chunks(BATCH) {
        let attrs = chunk.iter().map(|(a, _)| attribute(a, None)).collect();
        c.ecs
            .delete_attributes()
            .cluster(cluster)
            .set_attributes(Some(attrs))
            .send()
            .await
            .map_err(|e| call_error("DeleteAttributes", e))?;
    }
    Ok(())
}
