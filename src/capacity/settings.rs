//! `[capacity]` in the config: the ECS cluster, the one fleet that provides its instances, the
//! reservation to hold, the limits and pacing of changes.

use super::fleet::CapacityTarget;
use super::policy::Limits;
use crate::diag::Invalid;
use crate::units::{DurationOrOff, HumanDuration};
use serde::Deserialize;
use std::time::Duration;

/// `[capacity]`: keep an ECS cluster's reservation near a target with its fleet's capacity.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CapacitySettings {
    pub cluster: String,
    /// What provides the cluster's instances: exactly one of these.
    pub spot_fleet_request_id: Option<String>,
    pub auto_scaling_group: Option<String>,
    /// An EC2 Fleet of type maintain (ModifyFleet).
    pub fleet_id: Option<String>,
    /// Percent: the larger of CPU and memory reservation is held near it.
    #[serde(default = "default_target_reservation")]
    pub target_reservation: Percent,
    /// In the fleet's capacity units (weighted capacity is honoured).
    #[serde(default = "default_min_capacity")]
    pub min_capacity: u32,
    pub max_capacity: u32,
    #[serde(default = "default_out_step")]
    pub max_scale_out_step: u32,
    #[serde(default = "default_in_step")]
    pub max_scale_in_step: u32,
    #[serde(default = "default_out_cooldown")]
    pub scale_out_cooldown: HumanDuration,
    #[serde(default = "default_in_cooldown")]
    pub scale_in_cooldown: HumanDuration,
    #[serde(default = "default_interval")]
    pub interval: HumanDuration,
    /// How long new capacity takes to take tasks (launch, boot, ECS agent registration): demand
    /// that keeps rising is projected this far ahead. "0s" turns the look-ahead off.
    #[serde(default = "default_lead_time")]
    pub lead_time: DurationOrOff,
    /// Drain the chosen container instances before terminating them (their tasks move first).
    #[serde(default = "default_true")]
    pub drain_before_scale_in: bool,
    /// How long a drain may take before the scale-in is given up (the instances are set ACTIVE again).
    #[serde(default = "default_drain_timeout")]
    pub drain_timeout: HumanDuration,
    /// How long after its launch an instance of the fleet counts as launching while it has not
    /// registered with the cluster; after that it is reported, and no longer holds scale-in back.
    #[serde(default = "default_register_timeout")]
    pub register_timeout: HumanDuration,
    /// Decide and log, never act.
    #[serde(default)]
    pub dry_run: bool,
}

impl CapacitySettings {
    /// The one capacity target the section names (validated at load).
    pub fn target(&self) -> CapacityTarget {
        match (&self.spot_fleet_request_id, &self.auto_scaling_group, &self.fleet_id) {
            (Some(id), _, _) => CapacityTarget::SpotFleet(id.clone()),
            (None, Some(name), _) => CapacityTarget::AutoScalingGroup(name.clone()),
            (None, None, Some(id)) => CapacityTarget::Ec2Fleet(id.clone()),
            (None, None, None) => CapacityTarget::SpotFleet(String::new()),
        }
    }

    /// What the section's types cannot say by themselves: exactly one fleet, min below max.
    pub fn check(&self) -> Vec<Invalid> {
        let given = [&self.spot_fleet_request_id, &self.auto_scaling_group, &self.fleet_id]
            .iter()
            .filter(|t| t.is_some())
            .count();
        let target = match given {
            1 => None,
            0 => Some("no capacity to move; set spot_fleet_request_id = \"sfr-…\", fleet_id = \"fleet-…\" or auto_scaling_group = \"…\""),
            _ => Some("give one of spot_fleet_request_id, fleet_id and auto_scaling_group, not several"),
        };
        if let Some(msg) = target {
            return vec![Invalid::new("", msg)];
        }
        if self.min_capacity > self.max_capacity {
            let msg =
                format!("min_capacity {} is above max_capacity {}; lower it", self.min_capacity, self.max_capacity);
            return vec![Invalid::new("min_capacity", msg)];
        }
        Vec::new()
    }

    /// The policy's limits.
    pub fn limits(&self) -> Limits {
        Limits {
            target_reservation: self.target_reservation.0,
            min_capacity: f64::from(self.min_capacity),
            max_capacity: f64::from(self.max_capacity),
            max_scale_out_step: f64::from(self.max_scale_out_step),
            max_scale_in_step: f64::from(self.max_scale_in_step),
            scale_out_cooldown: self.scale_out_cooldown.0,
            scale_in_cooldown: self.scale_in_cooldown.0,
            lead_time: self.lead_time.0,
            drain_before_scale_in: self.drain_before_scale_in,
        }
    }

    /// The cluster and fleet a controller evaluates, as recorded with its latest evaluation: what
    /// `opsd capacity status` compares with its own config before using it.
    pub fn scope(&self) -> String {
        format!("{} on {}", self.cluster, self.target())
    }
}

/// A percentage in (0, 100].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Percent(pub f64);

impl<'de> Deserialize<'de> for Percent {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = f64::deserialize(d)?;
        if !(n > 0.0 && n <= 100.0) {
            return Err(serde::de::Error::custom(format!("{n}: use a percentage above 0 and at most 100, like 80")));
        }
        Ok(Percent(n))
    }
}

fn default_target_reservation() -> Percent {
    Percent(80.0)
}
fn default_min_capacity() -> u32 {
    1
}
fn default_out_step() -> u32 {
    10
}
fn default_in_step() -> u32 {
    2
}
fn default_out_cooldown() -> HumanDuration {
    HumanDuration(Duration::from_secs(60))
}
fn default_in_cooldown() -> HumanDuration {
    HumanDuration(Duration::from_secs(600))
}
fn default_lead_time() -> DurationOrOff {
    DurationOrOff(Duration::from_secs(180))
}
fn default_interval() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}
fn default_true() -> bool {
    true
}
fn default_drain_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(300))
}
fn default_register_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(300))
}
