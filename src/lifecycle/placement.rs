//! Where a launching instance's interface goes: the subnet of the instance's Availability Zone and
//! the security groups, from the hook's NotificationMetadata or the config's `[lifecycle.eni]`. Pure.
//!
//! Metadata forms honoured (JSON in the hook's NotificationMetadata):
//! - `{"SubnetId": "subnet-a", "SecurityGroups": ["sg-1"]}` (the AWS sample's form): one subnet, which
//!   must be in the instance's zone;
//! - `{"Subnets": ["subnet-a", "subnet-b"]}`: the one in the instance's zone is used;
//! - `{"Subnets": {"us-east-1a": "subnet-a", "us-east-1b": "subnet-b"}}`: looked up by zone.
//!
//! Metadata without subnets uses the config's subnets; `SecurityGroups` alone overrides the groups.

use std::collections::HashMap;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub subnet: String,
    pub security_groups: Vec<String>,
}

/// The candidate subnets before their zones are known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Candidates {
    /// Subnet ids; the one in the instance's zone is chosen once their zones are looked up.
    List(Vec<String>),
    /// Zone → subnet, given by the metadata.
    ByZone(HashMap<String, String>),
}

impl Candidates {
    /// Subnet ids whose zones must be looked up (none for `ByZone`).
    pub fn to_look_up(&self) -> &[String] {
        match self {
            Candidates::List(v) => v,
            Candidates::ByZone(_) => &[],
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlacementError {
    #[error("hook {hook}: NotificationMetadata is not JSON ({error}); write it as {{\"SubnetId\": \"subnet-…\", \"SecurityGroups\": [\"sg-…\"]}}")]
    Metadata { hook: String, error: String },
    #[error("hook {hook}: no subnet for the interface: its NotificationMetadata has neither SubnetId nor Subnets and [lifecycle.eni] subnets is empty; set one of them")]
    NoSubnets { hook: String },
    #[error("hook {hook}: none of the subnets {subnets:?} is in the instance's zone {zone}; add a subnet in {zone} (one per zone)")]
    NoSubnetInZone { hook: String, subnets: Vec<String>, zone: String },
}

#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct Metadata {
    subnet_id: Option<String>,
    subnets: Option<SubnetsField>,
    security_groups: Option<Vec<String>>,
}

#[derive(serde::Deserialize)]
#[serde(untagged)]
enum SubnetsField {
    List(Vec<String>),
    ByZone(HashMap<String, String>),
}

/// The candidates and security groups for a hook's metadata, with the config's defaults.
pub fn candidates(
    hook: &str,
    metadata: Option<&str>,
    default_subnets: &[String],
    default_groups: &[String],
) -> Result<(Candidates, Vec<String>), PlacementError> {
    let md: Metadata = match metadata.map(str::trim).filter(|m| !m.is_empty()) {
        None => Metadata::default(),
        Some(m) => match serde_json::from_str::<serde_json::Value>(m) {
            // Metadata that is JSON but not an object (or a plain string) is for someone else: ignore it.
            Ok(serde_json::Value::Object(o)) => serde_json::from_value(serde_json::Value::Object(o))
                .map_err(|e| PlacementError::Metadata { hook: hook.into(), error: e.to_string() })?,
            Ok(_) => Metadata::default(),
            Err(e) => return Err(PlacementError::Metadata { hook: hook.into(), error: e.to_string() }),
        },
    };
    let groups = md.security_groups.unwrap_or_else(|| default_groups.to_vec());
    let cands = match (md.subnet_id, md.subnets) {
        (Some(s), _) => Candidates::List(vec![s]),
        (None, Some(SubnetsField::List(v))) if !v.is_empty() => Candidates::List(v),
        (None, Some(SubnetsField::ByZone(m))) if !m.is_empty() => Candidates::ByZone(m),
        _ if !default_subnets.is_empty() => Candidates::List(default_subnets.to_vec()),
        _ => return Err(PlacementError::NoSubnets { hook: hook.into() }),
    };
    Ok((cands, groups))
}

/// Choose the subnet in `zone`, given each listed subnet's zone.
pub fn choose(
    hook: &str,
    cands: &Candidates,
    zone: &str,
    zone_of: &HashMap<String, String>,
) -> Result<String, PlacementError> {
    let found = match cands {
        Candidates::List(v) => v.iter().find(|s| zone_of.get(*s).map(String::as_str) == Some(zone)).cloned(),
        Candidates::ByZone(m) => m.get(zone).cloned(),
    };
    found.ok_or_else(|| PlacementError::NoSubnetInZone {
        hook: hook.into(),
        subnets: match cands {
            Candidates::List(v) => v.clone(),
            Candidates::ByZone(m) => {
                let mut v: Vec<String> = m.values().cloned().collect();
                v.sort();
                v
            }
        },
        zone: zone.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn metadata_forms_and_defaults() {
        let d = s(&["subnet-a", "subnet-b"]);
        let g = s(&["sg-default"]);
        let c = |m: Option<&str>| candidates("h", m, &d, &g);
        assert_eq!(c(None).unwrap(), (Candidates::List(d.clone()), g.clone()));
        assert_eq!(
            c(Some(r#"{"SubnetId": "subnet-x", "SecurityGroups": ["sg-1"]}"#)).unwrap(),
            (Candidates::List(s(&["subnet-x"])), s(&["sg-1"]))
        );
        assert_eq!(
            c(Some(r#"{"Subnets": ["subnet-y", "subnet-z"]}"#)).unwrap().0,
            Candidates::List(s(&["subnet-y", "subnet-z"]))
        );
        let by_zone = c(Some(r#"{"Subnets": {"us-east-1a": "subnet-1a"}}"#)).unwrap().0;
        assert_eq!(by_zone, Candidates::ByZone(HashMap::from([("us-east-1a".into(), "subnet-1a".into())])));
        // SecurityGroups alone keeps the default subnets.
        assert_eq!(c(Some(r#"{"SecurityGroups": ["sg-2"]}"#)).unwrap(), (Candidates::List(d.clone()), s(&["sg-2"])));
        assert!(matches!(c(Some("{not json")), Err(PlacementError::Metadata { .. })));
        let err = candidates("eni-hook", Some("{}"), &[], &[]).unwrap_err();
        assert_eq!(err, PlacementError::NoSubnets { hook: "eni-hook".into() });
        assert!(err.to_string().contains("hook eni-hook"));
    }

    #[test]
    fn the_subnet_of_the_instances_zone() {
        let zones =
            HashMap::from([("subnet-a".to_string(), "z1".to_string()), ("subnet-b".to_string(), "z2".to_string())]);
        let list = Candidates::List(s(&["subnet-a", "subnet-b"]));
        assert_eq!(choose("h", &list, "z2", &zones), Ok("subnet-b".into()));
        let err = choose("h", &list, "z3", &zones).unwrap_err();
        assert!(err.to_string().contains("zone z3"), "{err}");
        let by_zone = Candidates::ByZone(HashMap::from([("z9".into(), "subnet-9".into())]));
        assert_eq!(choose("h", &by_zone, "z9", &zones), Ok("subnet-9".into()));
        assert!(choose("h", &by_zone, "z1", &zones).is_err());
    }
}
