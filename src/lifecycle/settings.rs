//! `[lifecycle]` in the config: where lifecycle notifications arrive, how they are worked, and the
//! interface each launching instance gets (`[lifecycle.eni]`).

use crate::units::HumanDuration;
use serde::Deserialize;
use std::time::Duration;

/// `[lifecycle]`: where lifecycle notifications arrive and how they are worked.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LifecycleSettings {
    /// The SQS queue the hooks notify (directly, through SNS or through EventBridge).
    pub queue_url: String,
    /// Messages worked at once.
    #[serde(default = "default_workers")]
    pub workers: Workers,
    /// How long a received message stays invisible before heartbeats extend it.
    #[serde(default = "default_visibility")]
    pub visibility_timeout: HumanDuration,
    /// How often opsd looks for interfaces it created that were left unattached.
    #[serde(default = "default_sweep_interval")]
    pub sweep_interval: HumanDuration,
    /// An unattached opsd interface whose instance is gone is deleted after this long.
    #[serde(default = "default_sweep_grace")]
    pub sweep_grace: HumanDuration,
    /// The Auto Scaling groups whose actions opsd works (empty: any). A message naming another
    /// group is not acted on: the queue's writers cannot point opsd at any instance they like.
    #[serde(default)]
    pub groups: Vec<String>,
    /// The lifecycle hooks whose actions opsd works (empty: any).
    #[serde(default)]
    pub hooks: Vec<String>,
    /// While a launching instance waits, read its host keys from its console output and pin them
    /// (jobs with `host_keys = "pinned"` accept only these); no keys within `pin_timeout` abandons it.
    #[serde(default)]
    pub pin_host_keys: bool,
    /// How long a launch waits for cloud-init to print the host keys to the console.
    #[serde(default = "default_pin_timeout")]
    pub pin_timeout: HumanDuration,
    #[serde(default)]
    pub eni: EniSettings,
}

impl LifecycleSettings {
    /// Whether an action of `group` and `hook` may be worked.
    pub fn allows(&self, group: &str, hook: &str) -> bool {
        (self.groups.is_empty() || self.groups.iter().any(|g| g == group))
            && (self.hooks.is_empty() || self.hooks.iter().any(|h| h == hook))
    }
}

/// `[lifecycle.eni]`: the interface each launching instance gets (NotificationMetadata may override
/// the subnets and security groups per hook).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EniSettings {
    /// One subnet per Availability Zone: the interface goes in the one of the instance's zone.
    pub subnets: Vec<String>,
    pub security_groups: Vec<String>,
    pub device_index: DeviceIndex,
    pub description: String,
    /// How long a new interface may take to become `available`.
    pub ready_timeout: HumanDuration,
    /// An instance returned to the group's warm pool (a terminate action whose Destination is
    /// `WarmPool`: stopped, not terminated) keeps its interface, so it comes back with it.
    pub keep_in_warm_pool: bool,
}

impl Default for EniSettings {
    fn default() -> Self {
        EniSettings {
            subnets: Vec::new(),
            security_groups: Vec::new(),
            device_index: DeviceIndex(1),
            description: "opsd admin interface".into(),
            ready_timeout: HumanDuration(Duration::from_secs(120)),
            keep_in_warm_pool: true,
        }
    }
}

/// Worker count, 1..=100.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Workers(pub usize);

impl<'de> Deserialize<'de> for Workers {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = u64::deserialize(d)?;
        if !(1..=100).contains(&n) {
            return Err(serde::de::Error::custom(format!("{n} workers: use 1 to 100 (16 suits most queues)")));
        }
        Ok(Workers(n as usize))
    }
}

/// A secondary interface's device index, 1..=31 (0 is the primary interface).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceIndex(pub i32);

impl<'de> Deserialize<'de> for DeviceIndex {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = i64::deserialize(d)?;
        if !(1..=31).contains(&n) {
            return Err(serde::de::Error::custom(format!(
                "device index {n}: use 1 to 31 (0 is the instance's primary interface)"
            )));
        }
        Ok(DeviceIndex(n as i32))
    }
}

fn default_workers() -> Workers {
    Workers(16)
}

fn default_visibility() -> HumanDuration {
    HumanDuration(Duration::from_secs(300))
}

fn default_sweep_interval() -> HumanDuration {
    HumanDuration(Duration::from_secs(600))
}

fn default_pin_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(600))
}

fn default_sweep_grace() -> HumanDuration {
    HumanDuration(Duration::from_secs(1800))
}

#[cfg(test)]
mod scope_tests {
    use super::*;

    #[test]
    fn groups_and_hooks_bound_what_is_worked() {
        let parse =
            |extra: &str| -> LifecycleSettings { toml::from_str(&format!("queue_url = \"q\"\n{extra}")).unwrap() };
        assert!(parse("").allows("any", "hook"));
        let s = parse("groups = [\"web\"]\nhooks = [\"eni\"]");
        assert!(s.allows("web", "eni"));
        assert!(!s.allows("web", "other"));
        assert!(!s.allows("db", "eni"));
        assert!(parse("hooks = [\"eni\"]").allows("db", "eni"));
    }
}
