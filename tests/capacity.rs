//! The capacity controller against moto with the project's ECS extension (scripts/moto_ext/ecs.py):
//! instances of the Spot Fleet register in the cluster from their user data, services place their
//! tasks where they fit and report the rest, DRAINING moves service tasks.
//!
//! Each test has its own VPC (127.<n>.0.0/16, never sent traffic), cluster and fleet.

mod support;

use aws_sdk_ec2::types::{SpotFleetLaunchSpecification, SpotFleetRequestConfigData};
use aws_sdk_ecs::types::ContainerDefinition;
use serde_json::Value;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use support::daemon::{wait_for, Daemon};
use support::*;

struct Aws {
    rt: tokio::runtime::Runtime,
    ec2: aws_sdk_ec2::Client,
    ecs: aws_sdk_ecs::Client,
}

fn aws() -> Aws {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let sdk = sdk_config(&rt);
    Aws { ec2: aws_sdk_ec2::Client::new(&sdk), ecs: aws_sdk_ecs::Client::new(&sdk), rt }
}

fn next_net() -> u32 {
    static N: AtomicU32 = AtomicU32::new(0);
    160 + (std::process::id() % 5) * 8 + N.fetch_add(1, Ordering::SeqCst)
}

struct Cluster {
    name: String,
    subnet: String,
    fleet: String,
}

/// A cluster and a maintain-type Spot Fleet of c5.large (2048 CPU, 3704 MiB registered), weight 1,
/// whose instances join the cluster through their user data.
fn cluster(a: &Aws, target: i32) -> Cluster {
    let n = next_net();
    let name = unique("ecs");
    a.rt.block_on(async {
        let vpc = a.ec2.create_vpc().cidr_block(format!("127.{n}.0.0/16")).send().await.unwrap();
        let vpc = vpc.vpc().unwrap().vpc_id().unwrap().to_string();
        let sn = a.ec2.create_subnet().vpc_id(&vpc).cidr_block(format!("127.{n}.1.0/24")).send().await.unwrap();
        let subnet = sn.subnet().unwrap().subnet_id().unwrap().to_string();
        a.ecs.create_cluster().cluster_name(&name).send().await.unwrap();
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
            .build();
        let fleet = a.ec2.request_spot_fleet().spot_fleet_request_config(cfg).send().await.unwrap();
        Cluster { name, subnet, fleet: fleet.spot_fleet_request_id().unwrap().to_string() }
    })
}

fn base64_encode(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

impl Aws {
    fn task_def(&self, cpu: i32, mem: i32) -> String {
        let c = ContainerDefinition::builder().name("app").image("busybox").cpu(cpu).memory(mem).build();
        let out = self
            .rt
            .block_on(self.ecs.register_task_definition().family(unique("td")).container_definitions(c).send())
            .unwrap();
        out.task_definition().unwrap().task_definition_arn().unwrap().to_string()
    }

    fn service(&self, c: &Cluster, name: &str, td: &str, desired: i32) {
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

    fn set_desired(&self, c: &Cluster, name: &str, desired: i32) {
        self.rt
            .block_on(self.ecs.update_service().cluster(&c.name).service(name).desired_count(desired).send())
            .unwrap();
    }

    fn running(&self, c: &Cluster, name: &str) -> i32 {
        let out = self.rt.block_on(self.ecs.describe_services().cluster(&c.name).services(name).send()).unwrap();
        out.services()[0].running_count()
    }

    /// (target, fulfilled)
    fn fleet(&self, c: &Cluster) -> (i32, f64) {
        let out =
            self.rt.block_on(self.ec2.describe_spot_fleet_requests().spot_fleet_request_ids(&c.fleet).send()).unwrap();
        let cfg = out.spot_fleet_request_configs()[0].spot_fleet_request_config().unwrap();
        (cfg.target_capacity().unwrap(), cfg.fulfilled_capacity().unwrap())
    }

    /// EC2 instance ids registered in the cluster.
    fn members(&self, c: &Cluster) -> Vec<String> {
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
            out.container_instances().iter().map(|ci| ci.ec2_instance_id().unwrap().to_string()).collect()
        })
    }

    fn state(&self, instance: &str) -> String {
        let out = self.rt.block_on(self.ec2.describe_instances().instance_ids(instance).send()).unwrap();
        out.reservations()[0].instances()[0].state().unwrap().name().unwrap().as_str().to_string()
    }

    /// Stopped reasons of every stopped task of the cluster.
    fn stopped_reasons(&self, c: &Cluster) -> Vec<String> {
        self.rt.block_on(async {
            let arns = self
                .ecs
                .list_tasks()
                .cluster(&c.name)
                .desired_status(aws_sdk_ecs::types::DesiredStatus::Stopped)
                .send()
                .await
                .unwrap()
                .task_arns()
                .to_vec();
            if arns.is_empty() {
                return Vec::new();
            }
            let out = self.ecs.describe_tasks().cluster(&c.name).set_tasks(Some(arns)).send().await.unwrap();
            out.tasks().iter().map(|t| t.stopped_reason().unwrap_or_default().to_string()).collect()
        })
    }
}

fn ctx_for(c: &Cluster, extra: &str) -> Ctx {
    // `extra` may set scale_out_cooldown itself.
    let out_cooldown = if extra.contains("scale_out_cooldown") { "" } else { "scale_out_cooldown = \"1s\"\n" };
    Ctx::with_config_extra(&format!(
        "[capacity]\ncluster = \"{}\"\nspot_fleet_request_id = \"{}\"\ntarget_reservation = 80\nmin_capacity = 1\nmax_capacity = 10\nmax_scale_out_step = 10\nmax_scale_in_step = 2\n{out_cooldown}scale_in_cooldown = \"2s\"\ninterval = \"1s\"\ndrain_timeout = \"30s\"\n{extra}\n",
        c.name, c.fleet
    ))
}

fn status(ctx: &Ctx) -> Value {
    ctx.json(&["capacity", "status", "--limit", "100"])
}

/// Test 2: the observation of a mixed cluster matches hand-computed values.
#[test]
fn observation_matches_hand_computed_values() {
    let a = aws();
    let c = cluster(&a, 2); // two c5.large: 2048 CPU, 3704 MiB each
                            // A third instance, m5.large (2048 CPU, 7680 MiB), registered by hand.
    a.rt.block_on(async {
        let run = a
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
        a.ecs.register_container_instance().cluster(&c.name).instance_identity_document(doc).send().await.unwrap();
    });
    // Three small standalone tasks (512 CPU, 1024 MiB) all land on the first instance; the service's
    // tasks (1024, 2048) binpack: one on the second c5.large, two on the m5.large, two fit nowhere.
    let small = a.task_def(512, 1024);
    let run = a.rt.block_on(a.ecs.run_task().cluster(&c.name).task_definition(&small).count(3).send()).unwrap();
    assert_eq!(run.tasks().len(), 3);
    let web = a.task_def(1024, 2048);
    a.service(&c, "web", &web, 5);
    let ctx = ctx_for(&c, "");
    let s = status(&ctx);
    // CPU: (3 × 512 + 3 × 1024) / (3 × 2048) = 4608 / 6144 = 75 %.
    // Memory: (3 × 1024 + 3 × 2048) / (3704 + 3704 + 7680) = 9216 / 15088 = 61.08 %.
    let cpu = s["reservation"]["cpu"].as_f64().unwrap();
    let mem = s["reservation"]["memory"].as_f64().unwrap();
    assert!((cpu - 75.0).abs() < 0.01, "{s}");
    assert!((mem - 100.0 * 9216.0 / 15088.0).abs() < 0.01, "{s}");
    assert_eq!(s["reservation"]["max"].as_f64().unwrap(), cpu);
    assert_eq!((s["instances"].as_u64(), s["unplaced_tasks"].as_u64()), (Some(3), Some(2)), "{s}");
    assert_eq!(s["short_services"][0], serde_json::json!({"service": "web", "missing": 2}));
    assert_eq!(s["capacity"]["target"].as_f64(), Some(2.0));
    // The two unplaced tasks (1024 CPU each) and the target (used CPU 6656 / 0.8 = 8320 registered,
    // 2176 more: 2 c5.large) ask for two more units: the decision says scale out to 4.
    assert!(s["decision_now"]["action"].as_str().unwrap().contains("ScaleOut { to: 4.0 }"), "{s}");
    assert!(s["decision_now"]["reason"].as_str().unwrap().contains("2 unplaced tasks"), "{s}");
}

/// Test 3: tasks that do not fit → the target raised by the bin-packed amount → new instances
/// register → the tasks are placed.
#[test]
fn scale_out_places_the_tasks_that_did_not_fit() {
    let a = aws();
    let c = cluster(&a, 1);
    let td = a.task_def(1024, 1024);
    a.service(&c, "api", &td, 6);
    assert_eq!(a.running(&c, "api"), 2);
    let ctx = ctx_for(&c, "scale_out_cooldown = \"10m\"");
    let d = Daemon::start(&ctx, &[]);
    wait_for("all six tasks running", 30, &d, || a.running(&c, "api") == 6);
    // 4 tasks of 1024 CPU need 2 more c5.large; the 80 % target asks for 6144 / 0.8 = 7680 CPU
    // registered, 4 instances in all: target 4.
    assert_eq!(a.fleet(&c), (4, 4.0));
    assert_eq!(a.members(&c).len(), 4);
    let (code, _, log) = d.stop(Duration::from_secs(30));
    assert_eq!(code, Some(0), "{log}");
    let s = status(&ctx);
    let acted: Vec<&Value> = s["decisions"].as_array().unwrap().iter().filter(|d| d["outcome"] == "acted").collect();
    assert_eq!(acted.len(), 1, "{s}");
    assert_eq!((acted[0]["action"].as_str(), acted[0]["to_capacity"].as_f64()), (Some("scale_out"), Some(4.0)));
    assert!(acted[0]["reason"].as_str().unwrap().contains("4 unplaced tasks"), "{}", acted[0]);
    // More demand within the cooldown: `opsd capacity status` knows the recorded scale-out and says
    // the controller would wait, not scale out at once.
    a.rt.block_on(a.ecs.update_service().cluster(&c.name).service("api").desired_count(12).send()).unwrap();
    let s = status(&ctx);
    assert_eq!(s["decision_now"]["action"], "Hold", "{s}");
    assert!(s["decision_now"]["reason"].as_str().unwrap().contains("scale-out cooldown"), "{s}");
}

/// Test 4: scale in with draining: the chosen instances drain, their tasks move, exactly those are
/// terminated, the target is lowered, and no instance with tasks is terminated.
#[test]
fn scale_in_drains_then_terminates_exactly_the_chosen_instances() {
    let a = aws();
    let c = cluster(&a, 4);
    let td = a.task_def(1024, 1024);
    a.service(&c, "api", &td, 8);
    assert_eq!(a.running(&c, "api"), 8);
    a.set_desired(&c, "api", 2);
    // A standalone task (RunTask, not a service's): a drain would not move it, so its instance stays.
    let batch = a.task_def(256, 256);
    let run = a.rt.block_on(a.ecs.run_task().cluster(&c.name).task_definition(&batch).count(1).send()).unwrap();
    let pinned_arn = run.tasks()[0].container_instance_arn().unwrap().to_string();
    let pinned = a.rt.block_on(async {
        let out = a
            .ecs
            .describe_container_instances()
            .cluster(&c.name)
            .container_instances(&pinned_arn)
            .send()
            .await
            .unwrap();
        out.container_instances()[0].ec2_instance_id().unwrap().to_string()
    });
    let before = a.members(&c);
    let ctx = ctx_for(&c, "");
    let d = Daemon::start(&ctx, &[]);
    // 2 tasks × 1024 CPU: at 80 % two instances hold them (50 %), one would not (100 %).
    wait_for("the fleet at 2", 60, &d, || a.fleet(&c) == (2, 2.0) && a.members(&c).len() == 2);
    std::thread::sleep(Duration::from_secs(4));
    let (code, _, log) = d.stop(Duration::from_secs(30));
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(a.fleet(&c), (2, 2.0), "scaled in below what the tasks need");
    assert_eq!(a.running(&c, "api"), 2);
    let s = status(&ctx);
    let victims: Vec<String> = s["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["action"] == "scale_in" && d["outcome"] == "acted")
        .flat_map(|d| d["victims"].as_str().unwrap().split(',').map(String::from).collect::<Vec<_>>())
        .collect();
    let after = a.members(&c);
    let gone: Vec<&String> = before.iter().filter(|i| !after.contains(i)).collect();
    assert_eq!(gone.len(), 2);
    assert!(after.contains(&pinned), "the instance of the standalone task was removed");
    for g in &gone {
        assert!(victims.contains(g), "{g} was terminated but not chosen: {victims:?}");
        assert_eq!(a.state(g), "terminated");
    }
    // Every stopped task was stopped by the drain or the scale-down of the service, none by the
    // termination of its host.
    let reasons = a.stopped_reasons(&c);
    assert!(!reasons.iter().any(|r| r.contains("Host EC2 instance terminated")), "{reasons:?}");
}

/// Test 5: dry_run acts on nothing and logs the decision; a missing fleet is a clear error and the
/// daemon keeps running (its jobs keep firing).
#[test]
fn dry_run_and_a_missing_fleet() {
    let a = aws();
    let c = cluster(&a, 1);
    let td = a.task_def(1024, 1024);
    a.service(&c, "api", &td, 6);
    let ctx = ctx_for(&c, "dry_run = true");
    let d = Daemon::start(&ctx, &[]);
    wait_for("the dry-run decision", 30, &d, || d.log().contains("capacity (dry_run, nothing done)"));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(a.fleet(&c), (1, 1.0), "dry_run changed the fleet");
    assert_eq!(a.running(&c, "api"), 2);
    let (code, _, log) = d.stop(Duration::from_secs(30));
    assert_eq!(code, Some(0), "{log}");
    let s = status(&ctx);
    assert!(
        s["decisions"].as_array().unwrap().iter().any(|d| d["outcome"] == "dry_run" && d["action"] == "scale_out"),
        "{s}"
    );

    let missing = Cluster {
        name: c.name.clone(),
        subnet: c.subnet.clone(),
        fleet: "sfr-00000000-0000-4000-8000-000000000000".into(),
    };
    let ctx = ctx_for(&missing, "");
    let tag = unique("nobody");
    ctx.write_job("tick", &format!("schedule = \"@every 1s\"\n{}", job("T", &tag, &["true"], "", "")));
    let d = Daemon::start(&ctx, &[]);
    wait_for("the fleet error twice and the job firing meanwhile", 30, &d, || {
        d.log().matches("Spot Fleet request sfr-00000000-0000-4000-8000-000000000000 was not found").count() >= 2
            && ctx.json(&["history", "tick"])["runs"].as_array().unwrap().len() >= 3
    });
    let (code, _, log) = d.stop(Duration::from_secs(30));
    assert_eq!(code, Some(0), "{log}");
}

/// The same controller on an Auto Scaling group: SetDesiredCapacity to scale out, and scale-in by
/// TerminateInstanceInAutoScalingGroup of exactly the drained instances.
#[test]
fn an_auto_scaling_group_scales_out_and_in() {
    let a = aws();
    let c = cluster(&a, 0);
    let group = unique("asg");
    let asg = aws_sdk_autoscaling::Client::new(&sdk_config(&a.rt));
    a.rt.block_on(async {
        let user_data = base64_encode(&format!("#!/bin/bash\necho ECS_CLUSTER={} >> /etc/ecs/ecs.config\n", c.name));
        asg.create_launch_configuration()
            .launch_configuration_name(&group)
            .image_id("ami-760aaa0f")
            .instance_type("c5.large")
            .user_data(user_data)
            .send()
            .await
            .unwrap();
        asg.create_auto_scaling_group()
            .auto_scaling_group_name(&group)
            .launch_configuration_name(&group)
            .min_size(0)
            .max_size(10)
            .desired_capacity(1)
            .vpc_zone_identifier(&c.subnet)
            .send()
            .await
            .unwrap();
    });
    let desired = || {
        let out = a.rt.block_on(asg.describe_auto_scaling_groups().auto_scaling_group_names(&group).send()).unwrap();
        out.auto_scaling_groups()[0].desired_capacity().unwrap()
    };
    assert_eq!(a.members(&c).len(), 1);
    let td = a.task_def(1024, 1024);
    a.service(&c, "api", &td, 6);
    let ctx = Ctx::with_config_extra(&format!(
        "[capacity]\ncluster = \"{}\"\nauto_scaling_group = \"{group}\"\nmax_capacity = 10\nscale_out_cooldown = \"1s\"\nscale_in_cooldown = \"2s\"\ninterval = \"1s\"\ndrain_timeout = \"30s\"\n",
        c.name
    ));
    let d = Daemon::start(&ctx, &[]);
    wait_for("all six tasks running", 30, &d, || a.running(&c, "api") == 6);
    assert_eq!((desired(), a.members(&c).len()), (4, 4));
    a.set_desired(&c, "api", 2);
    wait_for("the group at 2", 60, &d, || desired() == 2 && a.members(&c).len() == 2);
    let (code, _, log) = d.stop(Duration::from_secs(30));
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(a.running(&c, "api"), 2);
    let reasons = a.stopped_reasons(&c);
    assert!(!reasons.iter().any(|r| r.contains("Host EC2 instance terminated")), "{reasons:?}");
}

/// The same controller on an EC2 Fleet of type maintain (ModifyFleet).
#[test]
fn an_ec2_fleet_scales_out_and_in() {
    use aws_sdk_ec2::types::{
        DefaultTargetCapacityType, FleetLaunchTemplateConfigRequest, FleetLaunchTemplateOverridesRequest,
        FleetLaunchTemplateSpecificationRequest, FleetType, InstanceType, RequestLaunchTemplateData,
        TargetCapacitySpecificationRequest,
    };
    let a = aws();
    let c = cluster(&a, 0);
    let fleet = a.rt.block_on(async {
        let user_data = base64_encode(&format!("#!/bin/bash\necho ECS_CLUSTER={} >> /etc/ecs/ecs.config\n", c.name));
        let data = RequestLaunchTemplateData::builder()
            .image_id("ami-760aaa0f")
            .instance_type(InstanceType::C5Large)
            .user_data(user_data)
            .build();
        let lt = a
            .ec2
            .create_launch_template()
            .launch_template_name(unique("lt"))
            .launch_template_data(data)
            .send()
            .await
            .unwrap();
        let lt = lt.launch_template().unwrap().launch_template_id().unwrap().to_string();
        let cfg = FleetLaunchTemplateConfigRequest::builder()
            .launch_template_specification(
                FleetLaunchTemplateSpecificationRequest::builder().launch_template_id(lt).version("$Latest").build(),
            )
            .overrides(
                FleetLaunchTemplateOverridesRequest::builder()
                    .instance_type(InstanceType::C5Large)
                    .subnet_id(&c.subnet)
                    .weighted_capacity(1.0)
                    .build(),
            )
            .build();
        let out = a
            .ec2
            .create_fleet()
            .r#type(FleetType::Maintain)
            .target_capacity_specification(
                TargetCapacitySpecificationRequest::builder()
                    .total_target_capacity(1)
                    .default_target_capacity_type(DefaultTargetCapacityType::OnDemand)
                    .build(),
            )
            .launch_template_configs(cfg)
            .send()
            .await
            .unwrap();
        out.fleet_id().unwrap().to_string()
    });
    let target = || {
        let out = a.rt.block_on(a.ec2.describe_fleets().fleet_ids(&fleet).send()).unwrap();
        out.fleets()[0].target_capacity_specification().unwrap().total_target_capacity().unwrap()
    };
    assert_eq!(a.members(&c).len(), 1);
    let td = a.task_def(1024, 1024);
    a.service(&c, "api", &td, 6);
    let ctx = Ctx::with_config_extra(&format!(
        "[capacity]\ncluster = \"{}\"\nfleet_id = \"{fleet}\"\nmax_capacity = 10\nscale_out_cooldown = \"1s\"\nscale_in_cooldown = \"2s\"\ninterval = \"1s\"\ndrain_timeout = \"30s\"\n",
        c.name
    ));
    let d = Daemon::start(&ctx, &[]);
    wait_for("all six tasks running", 30, &d, || a.running(&c, "api") == 6);
    assert_eq!((target(), a.members(&c).len()), (4, 4));
    a.set_desired(&c, "api", 2);
    wait_for("the fleet at 2", 60, &d, || target() == 2 && a.members(&c).len() == 2);
    let (code, _, log) = d.stop(Duration::from_secs(30));
    assert_eq!(code, Some(0), "{log}");
    let reasons = a.stopped_reasons(&c);
    assert!(!reasons.iter().any(|r| r.contains("Host EC2 instance terminated")), "{reasons:?}");
}
