//! What the capacity tests share: AWS clients on the sandbox's moto, a cluster with its VPC and
//! Spot Fleet, services, and the test's `[capacity]` config.

use super::*;
use aws_sdk_ec2::types::{SpotFleetLaunchSpecification, SpotFleetRequestConfigData};
use aws_sdk_ecs::types::ContainerDefinition;
use serde_json::Value;
use std::sync::atomic::{AtomicU32, Ordering};

pub struct Aws {
    pub rt: tokio::runtime::Runtime,
    pub ec2: aws_sdk_ec2::Client,
    pub ecs: aws_sdk_ecs::Client,
}

pub fn aws() -> Aws {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let sdk = sdk_config(&rt);
    Aws { ec2: aws_sdk_ec2::Client::new(&sdk), ecs: aws_sdk_ecs::Client::new(&sdk), rt }
}

pub fn next_net() -> u32 {
    static N: AtomicU32 = AtomicU32::new(0);
    160 + (std::process::id() % 5) * 8 + N.fetch_add(1, Ordering::SeqCst)
}

pub struct Cluster {
    pub name: String,
    pub subnet: String,
    pub fleet: String,
}

/// A cluster and a maintain-type Spot Fleet of c5.large (2048 CPU, 3704 MiB registered), weight 1,
/// whose instances join the cluster through their user data.
pub fn cluster(a: &Aws, target: i32) -> Cluster {
    cluster_with(a, target, None)
}

/// The same, with its stopped tasks staying STOPPING for `stop_secs` (the moto extension's
/// `moto:task-stop-seconds` cluster tag, as ECS tasks honouring a stop timeout): a drain takes that long.
pub fn cluster_with(a: &Aws, target: i32, stop_secs: Option<u32>) -> Cluster {
    let stop = stop_secs.map(|s| s.to_string());
    let tags: Vec<(&str, &str)> = stop.as_deref().map(|s| ("moto:task-stop-seconds", s)).into_iter().collect();
    cluster_tagged(a, target, &tags, &[])
}

/// The same, with the moto extension's latency tags on the cluster (`moto:register-seconds`,
/// `moto:task-stop-seconds`) and on the Spot Fleet request (`moto:fleet-modifying-seconds`).
pub fn cluster_tagged(a: &Aws, target: i32, cluster_tags: &[(&str, &str)], fleet_tags: &[(&str, &str)]) -> Cluster {
    let n = next_net();
    let name = unique("ecs");
    a.rt.block_on(async {
        let vpc = a.ec2.create_vpc().cidr_block(format!("127.{n}.0.0/16")).send().await.unwrap();
        let vpc = vpc.vpc().unwrap().vpc_id().unwrap().to_string();
        let sn = a.ec2.create_subnet().vpc_id(&vpc).cidr_block(format!("127.{n}.1.0/24")).send().await.unwrap();
        let subnet = sn.subnet().unwrap().subnet_id().unwrap().to_string();
        let mut create = a.ecs.create_cluster().cluster_name(&name);
        for (k, v) in cluster_tags {
            create = create.tags(aws_sdk_ecs::types::Tag::builder().key(*k).value(*v).build());
        }
        create.send().await.unwrap();
        let user_data = base64_encode(&format!("#!/bin/bash\necho ECS_CLUSTER={name} >> /etc/ecs/ecs.config\n"));
        let spec = SpotFleetLaunchSpecification::builder()
            .image_id("ami-760aaa0f")
            .instance_type(aws_sdk_ec2::types::InstanceType::C5Large)
            .subnet_id(&subnet)
            .user_data(user_data)
            .weighted_capacity(1.0)
            .build();
        let cfg = SpotFleetRequestConfigData::builder()
            .target_capacity(target)
            .iam_fleet_role("arn:aws:iam::123456789012:role/fleet")
            .r#type(aws_sdk_ec2::types::FleetType::Maintain)
            .allocation_strategy(aws_sdk_ec2::types::AllocationStrategy::LowestPrice)
            .launch_specifications(spec)
            .set_tag_specifications((!fleet_tags.is_empty()).then(|| {
                let mut t = aws_sdk_ec2::types::TagSpecification::builder()
                    .resource_type(aws_sdk_ec2::types::ResourceType::SpotFleetRequest);
                for (k, v) in fleet_tags {
                    t = t.tags(aws_sdk_ec2::types::Tag::builder().key(*k).value(*v).build());
                }
                vec![t.build()]
            }))
            .build();
        let fleet = a.ec2.request_spot_fleet().spot_fleet_request_config(cfg).send().await.unwrap();
        Cluster { name, subnet, fleet: fleet.spot_fleet_request_id().unwrap().to_string() }
    })
}

pub fn base64_encode(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

impl Aws {
    pub fn task_def(&self, cpu: i32, mem: i32) -> String {
        let c = ContainerDefinition::builder().name("app").image("busybox").cpu(cpu).memory(mem).build();
        let out = self
            .rt
            .block_on(self.ecs.register_task_definition().family(unique("td")).container_definitions(c).send())
            .unwrap();
        out.task_definition().unwrap().task_definition_arn().unwrap().to_string()
    }

    pub fn service(&self, c: &Cluster, name: &str, td: &str, desired: i32) {
        self.rt
            .block_on(
                self.ecs
                    .create_service()
                    .cluster(&c.name)
                    .service_name(name)
                    .task_definition(td)
                    .desired_count(desired)
                    .send(),
            )
            .unwrap();
    }

    pub fn set_desired(&self, c: &Cluster, name: &str, desired: i32) {
        self.rt
            .block_on(self.ecs.update_service().cluster(&c.name).service(name).desired_count(desired).send())
            .unwrap();
    }

    pub fn running(&self, c: &Cluster, name: &str) -> i32 {
        let out = self.rt.block_on(self.ecs.describe_services().cluster(&c.name).services(name).send()).unwrap();
        out.services()[0].running_count()
    }

    /// (target, fulfilled)
    pub fn fleet(&self, c: &Cluster) -> (i32, f64) {
        let out =
            self.rt.block_on(self.ec2.describe_spot_fleet_requests().spot_fleet_request_ids(&c.fleet).send()).unwrap();
        let cfg = out.spot_fleet_request_configs()[0].spot_fleet_request_config().unwrap();
        (cfg.target_capacity().unwrap(), cfg.fulfilled_capacity().unwrap())
    }

    /// EC2 instance ids registered in the cluster.
    pub fn members(&self, c: &Cluster) -> Vec<String> {
        self.statuses(c).into_iter().map(|(id, _)| id).collect()
    }

    /// Every container instance of the cluster, described.
    pub fn container_instances(&self, c: &Cluster) -> Vec<aws_sdk_ecs::types::ContainerInstance> {
        self.rt.block_on(async {
            let arns = self.ecs.list_container_instances().cluster(&c.name).send().await.unwrap();
            let arns = arns.container_instance_arns().to_vec();
            if arns.is_empty() {
                return Vec::new();
            }
            let out = self
                .ecs
                .describe_container_instances()
                .cluster(&c.name)
                .set_container_instances(Some(arns))
                .send()
                .await
                .unwrap();
            out.container_instances().to_vec()
        })
    }

    /// The container instance ARN of EC2 instance `ec2_id`.
    pub fn arn_of(&self, c: &Cluster, ec2_id: &str) -> String {
        let all = self.container_instances(c);
        let ci = all.iter().find(|ci| ci.ec2_instance_id() == Some(ec2_id)).unwrap();
        ci.container_instance_arn().unwrap().to_string()
    }

    /// (EC2 instance id, container instance status) of every container instance of the cluster.
    pub fn statuses(&self, c: &Cluster) -> Vec<(String, String)> {
        self.container_instances(c)
            .iter()
            .map(|ci| (ci.ec2_instance_id().unwrap().to_string(), ci.status().unwrap().to_string()))
            .collect()
    }

    pub fn draining(&self, c: &Cluster) -> Vec<String> {
        self.statuses(c).into_iter().filter(|(_, s)| s == "DRAINING").map(|(id, _)| id).collect()
    }

    /// An m5.large (2048 CPU, 7680 MiB) registered by hand: room in the cluster, not in the fleet.
    pub fn register_room(&self, c: &Cluster) -> String {
        self.rt.block_on(async {
            let run = self
                .ec2
                .run_instances()
                .image_id("ami-760aaa0f")
                .instance_type(aws_sdk_ec2::types::InstanceType::M5Large)
                .min_count(1)
                .max_count(1)
                .subnet_id(&c.subnet)
                .send()
                .await
                .unwrap();
            let id = run.instances()[0].instance_id().unwrap().to_string();
            let doc = format!("{{\"instanceId\": \"{id}\"}}");
            self.ecs
                .register_container_instance()
                .cluster(&c.name)
                .instance_identity_document(doc)
                .send()
                .await
                .unwrap();
            id
        })
    }

    /// The recorded scale-in decisions (shown by `capacity status` even when the fleet cannot be
    /// observed: it then exits 69).
    pub fn scale_in_decisions(ctx: &Ctx) -> Vec<Value> {
        let out = ctx.run(&["capacity", "status", "--limit", "100", "--output", "json"]);
        let s: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
        s["decisions"].as_array().unwrap().iter().filter(|d| d["action"] == "scale_in").cloned().collect()
    }

    pub fn state(&self, instance: &str) -> String {
        let out = self.rt.block_on(self.ec2.describe_instances().instance_ids(instance).send()).unwrap();
        out.reservations()[0].instances()[0].state().unwrap().name().unwrap().as_str().to_string()
    }

    /// A DAEMON service: one task on every ACTIVE instance where it fits.
    pub fn daemon_service(&self, c: &Cluster, name: &str, td: &str) {
        self.rt
            .block_on(
                self.ecs
                    .create_service()
                    .cluster(&c.name)
                    .service_name(name)
                    .task_definition(td)
                    .scheduling_strategy(aws_sdk_ecs::types::SchedulingStrategy::Daemon)
                    .send(),
            )
            .unwrap();
    }

    /// No task was cut short by the termination of its host: every stopped task was stopped by a
    /// drain or a service's scale-down, and had reached STOPPED before its instance went.
    pub fn assert_no_task_cut_short(&self, c: &Cluster) {
        let reasons = self.stopped_reasons(c);
        assert!(!reasons.iter().any(|r| r.contains("Host EC2 instance terminated")), "{reasons:?}");
    }

    /// Stopped reasons of every stopped task of the cluster (every ListTasks page).
    pub fn stopped_reasons(&self, c: &Cluster) -> Vec<String> {
        self.stopped(c).into_iter().map(|(_, reason)| reason).collect()
    }

    /// (group, stopped reason) of every stopped task of the cluster.
    pub fn stopped(&self, c: &Cluster) -> Vec<(String, String)> {
        self.rt.block_on(async {
            let mut arns = Vec::new();
            let mut pages = self
                .ecs
                .list_tasks()
                .cluster(&c.name)
                .desired_status(aws_sdk_ecs::types::DesiredStatus::Stopped)
                .into_paginator()
                .send();
            while let Some(p) = pages.next().await {
                arns.extend(p.unwrap().task_arns().iter().cloned());
            }
            let mut reasons = Vec::new();
            for chunk in arns.chunks(100) {
                let out =
                    self.ecs.describe_tasks().cluster(&c.name).set_tasks(Some(chunk.to_vec())).send().await.unwrap();
                reasons.extend(out.tasks().iter().map(|t| {
                    (t.group().unwrap_or_default().to_string(), t.stopped_reason().unwrap_or_default().to_string())
                }));
            }
            reasons
        })
    }
}

/// The test's `[capacity]`: fast defaults, each replaced by a line of `extra` that sets the same key.
pub fn ctx_for(c: &Cluster, extra: &str) -> Ctx {
    Ctx::with_config_extra(&section(c, extra))
}

/// The `[capacity]` section of [`ctx_for`].
pub fn section(c: &Cluster, extra: &str) -> String {
    let defaults = [
        ("target_reservation", "80"),
        ("min_capacity", "1"),
        ("max_capacity", "10"),
        ("max_scale_out_step", "10"),
        ("max_scale_in_step", "2"),
        ("scale_out_cooldown", "\"1s\""),
        ("scale_in_cooldown", "\"2s\""),
        ("interval", "\"1s\""),
        ("drain_timeout", "\"30s\""),
    ];
    let mut text = format!("[capacity]\ncluster = \"{}\"\nspot_fleet_request_id = \"{}\"\n", c.name, c.fleet);
    for (key, value) in defaults {
        if !extra.lines().any(|l| l.trim_start().starts_with(&format!("{key} "))) {
            text.push_str(&format!("{key} = {value}\n"));
        }
    }
    text.push_str(extra);
    text.push('\n');
    text
}

pub fn status(ctx: &Ctx) -> Value {
    ctx.json(&["capacity", "status", "--limit", "100"])
}
