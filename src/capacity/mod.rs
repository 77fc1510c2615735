//! The capacity wing: keeps an ECS cluster's reservation near a target by moving the capacity of
//! the fleet that provides its instances. Runs inside `opsd daemon` when the config has a
//! `[capacity]` section ([`settings`]).
//!
//! The [`controller`] observes ECS and the fleet ([`observe`]; the fleet kinds in [`fleet`]),
//! decides ([`policy`], pure, with reasons), records ([`history`]) and acts ([`act`]: drain, then
//! remove exactly the victims). `opsd capacity status` ([`status`]) shows the daemon's latest
//! evaluation and the last decisions; the `opsd_capacity…` series are in [`metrics`].

pub mod act;
pub mod controller;
pub mod fence;
pub mod fleet;
pub mod history;
mod mark;
pub mod metrics;
pub mod observe;
pub mod policy;
pub mod settings;
pub mod status;

/// The AWS clients the wing uses.
pub struct Clients {
    pub ecs: aws_sdk_ecs::Client,
    pub ec2: aws_sdk_ec2::Client,
    pub asg: aws_sdk_autoscaling::Client,
}

impl Clients {
    /// The controller's clients have a retry partition of their own: the adaptive mode's client-side
    /// rate limiter is per partition, so a storm of the lifecycle consumer's EC2 polls does not hold
    /// back the controller's deadline-bound calls (its steps run within the lease).
    pub fn new(sdk: &aws_config::SdkConfig) -> Clients {
        use aws_sdk_ecs::config::retry::RetryPartition;
        let part = |service: &str| RetryPartition::new(format!("opsd-capacity-{service}"));
        Clients {
            ecs: aws_sdk_ecs::Client::from_conf(
                aws_sdk_ecs::config::Builder::from(sdk).retry_partition(part("ecs")).build(),
            ),
            ec2: aws_sdk_ec2::Client::from_conf(
                aws_sdk_ec2::config::Builder::from(sdk).retry_partition(part("ec2")).build(),
            ),
            asg: aws_sdk_autoscaling::Client::from_conf(
                aws_sdk_autoscaling::config::Builder::from(sdk).retry_partition(part("autoscaling")).build(),
            ),
        }
    }
}
