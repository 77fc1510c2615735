//! What the lifecycle tests share: AWS clients on the sandbox's moto, a group with its VPC,
//! queues and hooks, views of interfaces and queues, and the test's `[lifecycle]` config.

use super::*;
use aws_sdk_autoscaling::types::Tag as AsgTag;
use aws_sdk_ec2::types::Filter;
use aws_sdk_sqs::types::QueueAttributeName;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};

/// (id, status, attached instance and device index, subnet)
pub type EniView = (String, String, Option<(String, i32)>, String);

pub struct Aws {
    pub rt: tokio::runtime::Runtime,
    pub ec2: aws_sdk_ec2::Client,
    pub asg: aws_sdk_autoscaling::Client,
    pub sqs: aws_sdk_sqs::Client,
}

pub fn aws() -> Aws {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let sdk = sdk_config(&rt);
    Aws {
        ec2: aws_sdk_ec2::Client::new(&sdk),
        asg: aws_sdk_autoscaling::Client::new(&sdk),
        sqs: aws_sdk_sqs::Client::new(&sdk),
        rt,
    }
}

/// A group of this test's own, with its network and queues.
pub struct Group {
    pub name: String,
    /// (subnet id, zone)
    pub subnets: Vec<(String, String)>,
    pub queue: String,
    pub dlq: String,
}

/// A /16 no other test (or the sandbox fleet, 127.0/16, or the moto-extension tests, 127.200+) uses.
pub fn next_net() -> u32 {
    static N: AtomicU32 = AtomicU32::new(0);
    100 + (std::process::id() % 10) * 9 + N.fetch_add(1, Ordering::SeqCst)
}

pub struct Setup<'a> {
    /// moto:time-scale of the group: its hooks' clocks run this many times as fast... as long.
    pub scale: &'a str,
    pub heartbeat_timeout: i32,
    /// NotificationMetadata of the launch hook.
    pub metadata: Option<&'a str>,
    /// A `moto:eni-pending-seconds` tag on the subnets.
    pub pending: Option<&'a str>,
    /// SQS redrive to the dead-letter queue after this many receives.
    pub max_receives: u32,
    /// More moto-extension tags on the subnets (`moto:eni-attach-seconds`, `moto:eni-detach-seconds`).
    pub subnet_tags: &'a [(&'a str, &'a str)],
}

impl Default for Setup<'_> {
    fn default() -> Self {
        Setup { scale: "1", heartbeat_timeout: 60, metadata: None, pending: None, max_receives: 3, subnet_tags: &[] }
    }
}

pub fn group(a: &Aws, s: Setup<'_>) -> Group {
    let n = next_net();
    let name = unique("asg");
    a.rt.block_on(async {
        let vpc = a.ec2.create_vpc().cidr_block(format!("127.{n}.0.0/16")).send().await.unwrap();
        let vpc = vpc.vpc().unwrap().vpc_id().unwrap().to_string();
        let mut subnets = Vec::new();
        for (i, zone) in ["us-east-1a", "us-east-1b"].iter().enumerate() {
            let sn = a
                .ec2
                .create_subnet()
                .vpc_id(&vpc)
                .cidr_block(format!("127.{n}.{}.0/24", i + 1))
                .availability_zone(*zone)
                .send()
                .await
                .unwrap();
            let id = sn.subnet().unwrap().subnet_id().unwrap().to_string();
            let pending = s.pending.map(|p| ("moto:eni-pending-seconds", p));
            for (k, v) in pending.iter().chain(s.subnet_tags) {
                let tag = aws_sdk_ec2::types::Tag::builder().key(*k).value(*v).build();
                a.ec2.create_tags().resources(&id).tags(tag).send().await.unwrap();
            }
            subnets.push((id, zone.to_string()));
        }
        let dlq = a.sqs.create_queue().queue_name(format!("{name}-dlq")).send().await.unwrap().queue_url.unwrap();
        let dlq_arn = queue_arn(a, &dlq).await;
        let redrive = format!("{{\"deadLetterTargetArn\":\"{dlq_arn}\",\"maxReceiveCount\":\"{}\"}}", s.max_receives);
        let queue = a
            .sqs
            .create_queue()
            .queue_name(&name)
            .attributes(QueueAttributeName::RedrivePolicy, redrive)
            .send()
            .await
            .unwrap()
            .queue_url
            .unwrap();
        let arn = queue_arn(a, &queue).await;
        let lc = format!("{name}-lc");
        a.asg
            .create_launch_configuration()
            .launch_configuration_name(&lc)
            .image_id("ami-760aaa0f")
            .instance_type("t3.micro")
            .send()
            .await
            .unwrap();
        let scale = AsgTag::builder().key("moto:time-scale").value(s.scale).propagate_at_launch(false).build();
        a.asg
            .create_auto_scaling_group()
            .auto_scaling_group_name(&name)
            .launch_configuration_name(&lc)
            .min_size(0)
            .max_size(200)
            .desired_capacity(0)
            .vpc_zone_identifier(subnets.iter().map(|s| s.0.clone()).collect::<Vec<_>>().join(","))
            .tags(scale)
            .send()
            .await
            .unwrap();
        for (hook, transition) in
            [("launch", "autoscaling:EC2_INSTANCE_LAUNCHING"), ("terminate", "autoscaling:EC2_INSTANCE_TERMINATING")]
        {
            let mut put = a
                .asg
                .put_lifecycle_hook()
                .auto_scaling_group_name(&name)
                .lifecycle_hook_name(hook)
                .lifecycle_transition(transition)
                .heartbeat_timeout(s.heartbeat_timeout)
                .default_result("ABANDON")
                .notification_target_arn(&arn)
                .role_arn("arn:aws:iam::123456789012:role/opsd-hooks");
            if let (Some(m), "launch") = (s.metadata, hook) {
                put = put.notification_metadata(m);
            }
            put.send().await.unwrap();
        }
        Group { name, subnets, queue, dlq }
    })
}

pub async fn queue_arn(a: &Aws, url: &str) -> String {
    let out =
        a.sqs.get_queue_attributes().queue_url(url).attribute_names(QueueAttributeName::QueueArn).send().await.unwrap();
    out.attributes().unwrap()[&QueueAttributeName::QueueArn].clone()
}

impl Aws {
    pub fn scale(&self, g: &Group, n: i32) {
        self.rt
            .block_on(self.asg.set_desired_capacity().auto_scaling_group_name(&g.name).desired_capacity(n).send())
            .unwrap();
    }

    /// Instance id → lifecycle state, of the group.
    pub fn states(&self, g: &Group) -> HashMap<String, String> {
        let out =
            self.rt.block_on(self.asg.describe_auto_scaling_groups().auto_scaling_group_names(&g.name).send()).unwrap();
        out.auto_scaling_groups()[0]
            .instances()
            .iter()
            .map(|i| (i.instance_id().unwrap().to_string(), i.lifecycle_state().unwrap().as_str().to_string()))
            .collect()
    }

    /// Interfaces tagged for `instance`.
    pub fn enis_of(&self, instance: &str) -> Vec<EniView> {
        let f = Filter::builder().name("tag:opsd:instance-id").values(instance).build();
        let out = self.rt.block_on(self.ec2.describe_network_interfaces().filters(f).send()).unwrap();
        out.network_interfaces()
            .iter()
            .map(|n| {
                (
                    n.network_interface_id().unwrap().to_string(),
                    n.status().map(|s| s.as_str().to_string()).unwrap_or_default(),
                    n.attachment()
                        .map(|a| (a.instance_id().unwrap_or_default().to_string(), a.device_index().unwrap_or(-1))),
                    n.subnet_id().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }

    /// (zone, subnet, state) of an instance.
    pub fn instance(&self, id: &str) -> (String, String, String) {
        let out = self.rt.block_on(self.ec2.describe_instances().instance_ids(id).send()).unwrap();
        let i = &out.reservations()[0].instances()[0];
        (
            i.placement().unwrap().availability_zone().unwrap().to_string(),
            i.subnet_id().unwrap_or_default().to_string(),
            i.state().unwrap().name().unwrap().as_str().to_string(),
        )
    }

    /// (waiting, in flight) messages of a queue.
    pub fn depth(&self, url: &str) -> (i64, i64) {
        let out = self
            .rt
            .block_on(
                self.sqs
                    .get_queue_attributes()
                    .queue_url(url)
                    .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
                    .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
                    .send(),
            )
            .unwrap();
        let a = out.attributes().unwrap();
        let get = |k: QueueAttributeName| a.get(&k).and_then(|v| v.parse().ok()).unwrap_or(-1);
        (
            get(QueueAttributeName::ApproximateNumberOfMessages),
            get(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        )
    }

    /// Tag the group (the sandbox's switches: `moto:complete-error`, `moto:heartbeat-error`, …).
    pub fn tag_group(&self, g: &Group, key: &str, value: &str) {
        let tag = AsgTag::builder()
            .resource_id(&g.name)
            .resource_type("auto-scaling-group")
            .key(key)
            .value(value)
            .propagate_at_launch(false)
            .build();
        self.rt.block_on(self.asg.create_or_update_tags().tags(tag).send()).unwrap();
    }

    /// A warm pool of stopped instances for `g`, reused on scale-in.
    pub fn warm_pool(&self, g: &Group) {
        let reuse = aws_sdk_autoscaling::types::InstanceReusePolicy::builder().reuse_on_scale_in(true).build();
        let put = self
            .asg
            .put_warm_pool()
            .auto_scaling_group_name(&g.name)
            .pool_state(aws_sdk_autoscaling::types::WarmPoolState::Stopped)
            .instance_reuse_policy(reuse);
        self.rt.block_on(put.send()).unwrap();
    }

    pub fn drop_warm_pool(&self, g: &Group) {
        self.rt
            .block_on(self.asg.delete_warm_pool().auto_scaling_group_name(&g.name).force_delete(true).send())
            .unwrap();
    }

    pub fn send(&self, url: &str, body: &str) -> String {
        self.rt.block_on(self.sqs.send_message().queue_url(url).message_body(body).send()).unwrap().message_id.unwrap()
    }
}

/// The test's opsd config: the sandbox's, plus a [lifecycle] section for `g`.
pub fn ctx_for(g: &Group, extra: &str, eni_extra: &str) -> Ctx {
    Ctx::with_config_extra(&section(g, extra, eni_extra))
}

/// The `[lifecycle]` section of [`ctx_for`].
pub fn section(g: &Group, extra: &str, eni_extra: &str) -> String {
    let subnets: Vec<String> = g.subnets.iter().map(|s| format!("{:?}", s.0)).collect();
    let visibility = if extra.contains("visibility_timeout") { "" } else { "visibility_timeout = \"30s\"\n" };
    format!(
        "[lifecycle]\nqueue_url = \"{}\"\nworkers = 16\n{visibility}{extra}\n[lifecycle.eni]\nsubnets = [{}]\nready_timeout = \"30s\"\n{eni_extra}\n",
        g.queue,
        subnets.join(", ")
    )
}

pub fn actions(ctx: &Ctx) -> Vec<serde_json::Value> {
    let v = ctx.json(&["lifecycle", "status", "--limit", "1000"]);
    v["actions"].as_array().unwrap().clone()
}

/// Every instance of the group is InService with exactly one opsd interface, in its own zone's
/// subnet, attached at device index 1.
pub fn assert_each_has_its_eni(a: &Aws, g: &Group, n: usize) {
    let states = a.states(g);
    assert_eq!(states.len(), n, "{states:?}");
    for (id, state) in &states {
        assert_eq!(state, "InService", "{id}: {states:?}");
        let (zone, _, _) = a.instance(id);
        let enis = a.enis_of(id);
        assert_eq!(enis.len(), 1, "{id} has {enis:?}");
        let (eni, status, attachment, subnet) = &enis[0];
        assert_eq!(status, "in-use", "{eni}");
        assert_eq!(attachment.as_ref(), Some(&(id.clone(), 1)), "{eni}");
        let want = &g.subnets.iter().find(|s| s.1 == zone).unwrap().0;
        assert_eq!(subnet, want, "{eni} of {id} in {zone}");
    }
}
