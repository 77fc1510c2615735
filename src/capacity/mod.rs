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
    pub fn new(sdk: &aws_config::SdkConfig) -> Clients {
        Clients {
            ecs: aws_sdk_ecs::Client::new(sdk),
            ec2: aws_sdk_ec2::Client::new(sdk),
            asg: aws_sdk_autoscaling::Client::new(sdk),
        }
    }
}
