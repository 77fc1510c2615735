//! The capacity controller against moto with the project's ECS extension (scripts/moto_ext/ecs.py):
//! instances of the Spot Fleet register in the cluster from their user data, services place their
//! tasks where they fit and report the rest, DRAINING moves service tasks.
//!
//! Each test has its own VPC (127.<n>.0.0/16, never sent traffic), cluster and fleet.

mod support;

use serde_json::Value;
use std::time::Duration;
use support::capacity::*;
use support::daemon::{metric, wait_for, Daemon};
use support::*;

/// Test 2: the observation of a mixed cluster matches hand-computed values.
#[test]
fn observation_matches_hand_computed_values() {
    let a = aws();
    let c = cluster(&a, 2); // two c5.large: 2048 CPU, 3704 MiB each
    a.register_room(&c); // and an m5.large (2048 CPU, 7680 MiB) registered by hand
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
    assert_eq!(
        (s["decision_now"]["action"].as_str(), s["decision_now"]["to_capacity"].as_f64()),
        (Some("scale_out"), Some(4.0)),
        "{s}"
    );
    // No daemon has evaluated this cluster: the desired capacity is this evaluation's.
    assert_eq!(s["daemon"], Value::Null, "{s}");
    assert_eq!(s["capacity"]["desired"].as_f64(), Some(4.0), "{s}");
    assert!(s["decision_now"]["reason"].as_str().unwrap().contains("2 unplaced tasks"), "{s}");
}

/// Test 3: tasks that do not fit → the target raised by the bin-packed amount → new instances
/// register → the tasks are placed.
#[test]
fn scale_out_places_the_tasks_that_did_not_fit() {
    let a = aws();
    let c = cluster(&a, 1);
    // One task of 1280 CPU per c5.large (2048 CPU): one runs, four wait.
    let td = a.task_def(1280, 1024);
    a.service(&c, "api", &td, 5);
    assert_eq!(a.running(&c, "api"), 1);
    let ctx = ctx_for(&c, "scale_out_cooldown = \"10m\"");
    let d = Daemon::start(&ctx, &[("OPSD_METRICS_LISTEN", "127.0.0.1:0")]);
    wait_for("all five tasks running", 30, &d, || a.running(&c, "api") == 5);
    // Bin-packed, the four waiting tasks need four more c5.large: target 5. Their sum (5120 CPU, 2.5
    // instances) and the 80 % target (6400 / 0.8 = 8000 CPU registered: 4 instances in all) ask
    // for less: a target of 4 would leave a task waiting.
    assert_eq!(a.fleet(&c), (5, 5.0));
    assert_eq!(a.members(&c).len(), 5);
    // The gauges follow the observation of the next interval: wait for the one after the scale-out.
    let mut text = String::new();
    wait_for("the metrics of the observation with five instances", 20, &d, || {
        text = d.metrics();
        metric(&text, "opsd_capacity_fulfilled_units") == Some(5.0)
    });
    assert_eq!(metric(&text, "opsd_capacity_target_units"), Some(5.0), "{text}");
    assert_eq!(metric(&text, "opsd_capacity_unplaced_tasks"), Some(0.0), "{text}");
    // 5 × 1280 / (5 × 2048) = 62.5 %.
    assert_eq!(metric(&text, "opsd_capacity_reservation_percent"), Some(62.5), "{text}");
    let acted = metric(&text, "opsd_capacity_decisions_total{action=\"scale_out\",outcome=\"acted\"}");
    assert_eq!(acted, Some(1.0), "{text}");
    d.stop_ok();
    let s = status(&ctx);
    let acted: Vec<&Value> = s["decisions"].as_array().unwrap().iter().filter(|d| d["outcome"] == "acted").collect();
    assert_eq!(acted.len(), 1, "{s}");
    assert_eq!((acted[0]["action"].as_str(), acted[0]["to_capacity"].as_f64()), (Some("scale_out"), Some(5.0)));
    assert!(acted[0]["reason"].as_str().unwrap().contains("4 unplaced tasks"), "{}", acted[0]);
    // More demand within the cooldown: `opsd capacity status` knows the recorded scale-out and says
    // the controller would wait, not scale out at once.
    a.rt.block_on(a.ecs.update_service().cluster(&c.name).service("api").desired_count(12).send()).unwrap();
    let s = status(&ctx);
    assert_eq!(s["decision_now"]["action"], "hold", "{s}");
    assert!(s["decision_now"]["reason"].as_str().unwrap().contains("scale-out cooldown"), "{s}");
}

/// Issue 14, section 1 latency: the fleet stays `modifying` for 2 s after each change, its
/// instances register with the cluster 4 s after launch and tasks stay PENDING 3 s, as in AWS (in
/// minutes there); the service's running and pending counters follow its placed tasks 2 s late
/// (ECS's counters are eventually consistent with the tasks and the instances' resources). The
/// controller waits for the change to apply, counts the registering instances as launching and the
/// placed tasks as placed even before the counters say so: one scale-out to exactly what the tasks
/// need, not a second one while they register and start.
#[test]
fn slow_fleets_and_slow_registration_get_one_scale_out() {
    let a = aws();
    let c = cluster_tagged(
        &a,
        1,
        &[("moto:register-seconds", "4"), ("moto:task-start-seconds", "3"), ("moto:service-counts-lag-seconds", "2")],
        &[("moto:fleet-modifying-seconds", "2")],
    );
    let mut tries = 0;
    while a.members(&c).is_empty() {
        tries += 1;
        assert!(tries < 100, "the first instance never registered");
        std::thread::sleep(Duration::from_millis(100));
    }
    let td = a.task_def(1280, 1024);
    a.service(&c, "api", &td, 5);
    let ctx = ctx_for(&c, "scale_out_cooldown = \"1s\"\n");
    let d = Daemon::start(&ctx, &[]);
    wait_for("all five tasks running", 60, &d, || a.running(&c, "api") == 5);
    // A few more intervals: nothing more is asked for.
    std::thread::sleep(Duration::from_secs(3));
    d.stop_ok();
    let s = status(&ctx);
    let outs: Vec<&Value> = s["decisions"].as_array().unwrap().iter().filter(|d| d["action"] == "scale_out").collect();
    assert_eq!(a.fleet(&c), (5, 5.0), "{outs:#?}");
    assert_eq!(outs.len(), 1, "{outs:?}");
    assert_eq!((outs[0]["outcome"].as_str(), outs[0]["to_capacity"].as_f64()), (Some("acted"), Some(5.0)));
}

/// Test 4: scale in with draining: the chosen instances drain, their tasks move, exactly those are
/// terminated, the target is lowered, and no instance with tasks is terminated.
#[test]
fn scale_in_drains_then_terminates_exactly_the_chosen_instances() {
    let a = aws();
    // Stopped tasks take 3 s to stop, as tasks honouring a stop timeout: the drain has to wait.
    let c = cluster_with(&a, 4, Some(3));
    let room = a.register_room(&c);
    // One service task per c5.large (two do not fit its 3704 MiB); the m5.large outside the fleet
    // has room for two.
    let td = a.task_def(1024, 2048);
    a.service(&c, "api", &td, 4);
    assert_eq!(a.running(&c, "api"), 4);
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
    assert_ne!(pinned, room);
    let before = a.members(&c);
    let ctx = ctx_for(&c, "");
    let d = Daemon::start(&ctx, &[]);
    // 4 × 1024 + 256 CPU over 5 × 2048: 42 %. Two c5.large with a service task each go (two is the
    // step): 4352 / 6144 = 71 %, their tasks moving to the m5.large. A third would make it 106 %.
    let mut drained = std::collections::BTreeSet::new();
    wait_for("the fleet at 2", 60, &d, || {
        drained.extend(a.draining(&c));
        a.fleet(&c) == (2, 2.0) && a.members(&c).len() == 3
    });
    std::thread::sleep(Duration::from_secs(4));
    d.stop_ok();
    assert_eq!(a.fleet(&c), (2, 2.0), "scaled in below what the tasks need");
    assert_eq!(a.running(&c, "api"), 4);
    let s = status(&ctx);
    let victims: Vec<String> = s["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["action"] == "scale_in" && d["outcome"] == "acted")
        .flat_map(|d| d["victims"].as_str().unwrap().split(',').map(String::from).collect::<Vec<_>>())
        .collect();
    let after = a.members(&c);
    let gone: Vec<String> = before.iter().filter(|i| !after.contains(i)).cloned().collect();
    assert_eq!(gone.len(), 2);
    assert!(after.contains(&pinned), "the instance of the standalone task was removed");
    assert!(after.contains(&room), "the instance outside the fleet was removed");
    for g in &gone {
        assert!(victims.contains(g), "{g} was terminated but not chosen: {victims:?}");
        assert!(drained.contains(g), "{g} was terminated without draining first (seen draining: {drained:?})");
        assert_eq!(a.state(g), "terminated");
    }
    // The victims' tasks were stopped by the drain (and restarted by the service elsewhere), and
    // had stopped before their instances went.
    let by_drain =
        a.stopped_reasons(&c).iter().filter(|r| *r == "Service task on a draining container instance").count();
    assert_eq!(by_drain, 2, "{:?}", a.stopped_reasons(&c));
    a.assert_no_task_cut_short(&c);
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
    d.stop_ok();
    let s = status(&ctx);
    // Evaluated every second, the same decision is recorded once (and again only when it changes,
    // or after 5 minutes).
    let dry: Vec<&Value> = s["decisions"].as_array().unwrap().iter().filter(|d| d["outcome"] == "dry_run").collect();
    assert_eq!(dry.len(), 1, "{s}");
    assert_eq!((dry[0]["action"].as_str(), dry[0]["to_capacity"].as_f64()), (Some("scale_out"), Some(4.0)), "{s}");
    // The daemon's latest evaluation is shown, and gives the desired capacity.
    assert_eq!(
        (s["daemon"]["action"].as_str(), s["daemon"]["dry_run"].as_bool()),
        (Some("scale_out"), Some(true)),
        "{s}"
    );
    assert_eq!(s["capacity"]["desired"].as_f64(), Some(4.0), "{s}");
    let text = String::from_utf8_lossy(&ctx.run(&["capacity", "status"]).stdout).to_string();
    assert!(text.contains("capacity: target 1, fulfilled 1, desired 4"), "{text}");
    assert!(text.contains("daemon (") && text.contains("): scale out to 4: "), "{text}");

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
    d.stop_ok();
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
    d.stop_ok();
    assert_eq!(a.running(&c, "api"), 2);
    a.assert_no_task_cut_short(&c);
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
    d.stop_ok();
    a.assert_no_task_cut_short(&c);
}

/// A scale-in cut short by a crash (kill -9 while its victims drain) is undone at the next start:
/// the victims, left DRAINING, go back to ACTIVE, nothing is terminated, and the decision is
/// recorded as interrupted.
#[test]
fn a_scale_in_cut_short_by_a_crash_is_undone_at_the_next_start() {
    let a = aws();
    // Stopped tasks take 10 minutes to stop: the drain is still going when opsd is killed.
    let c = cluster_with(&a, 4, Some(600));
    let td = a.task_def(1024, 1024);
    a.service(&c, "api", &td, 8);
    a.set_desired(&c, "api", 2);
    let before = a.members(&c);
    let ctx = ctx_for(&c, "drain_timeout = \"10m\"");
    let d = Daemon::start(&ctx, &[]);
    wait_for("two instances draining", 30, &d, || a.draining(&c).len() == 2);
    let drained = || {
        let mut d = a.draining(&c);
        d.sort();
        d
    };
    let before_kill = drained();
    let started = Aws::scale_in_decisions(&ctx);
    assert!(started.iter().any(|d| d["outcome"] == "started"), "{started:?}");
    d.signal("-KILL");
    let _ = d.wait(Duration::from_secs(10));
    assert_eq!(drained(), before_kill, "nothing changes while opsd is down");
    // The next start, with a scale-in cooldown long enough that it does not drain again at once.
    let d = Daemon::start(&ctx, &[("OPSD_CAPACITY__SCALE_IN_COOLDOWN", "10m")]);
    wait_for("the drained instances back to ACTIVE", 30, &d, || a.draining(&c).is_empty());
    let log = d.stop_ok();
    assert!(log.contains("an unfinished scale-in"), "{log}");
    let mut after = a.members(&c);
    after.sort();
    let mut before = before;
    before.sort();
    assert_eq!(after, before, "an instance was removed");
    for id in &before {
        assert_eq!(a.state(id), "running");
    }
    let decisions = Aws::scale_in_decisions(&ctx);
    let d = decisions.iter().find(|d| {
        let mut v: Vec<String> = d["victims"].as_str().unwrap().split(',').map(String::from).collect();
        v.sort();
        v == before_kill
    });
    let d = d.unwrap_or_else(|| panic!("no decision for {before_kill:?}: {decisions:?}"));
    assert_eq!(d["outcome"], "interrupted", "{d}");
    assert!(d["error"].as_str().unwrap().contains("set back to ACTIVE"), "{d}");
}

/// Issue 14, 3.10: opsd sets back to ACTIVE only what it drained itself. opsd is killed after it
/// recorded a scale-in but before its DRAINING went through (AWS throttles the call); meanwhile an
/// operator drains one of the chosen instances for reasons of their own. The next start finishes
/// the unfinished scale-in without cancelling that drain: the instance carries no opsd mark.
#[test]
fn an_operators_drain_is_never_undone() {
    let a = aws();
    let c = cluster(&a, 3);
    a.register_room(&c);
    let td = a.task_def(1024, 2048);
    a.service(&c, "api", &td, 3);
    let ctx = ctx_for(&c, "");
    faults(&ctx, serde_json::json!({"throttle": {"ecs": {"UpdateContainerInstancesState": [0, 0]}}}));
    let d = Daemon::start(&ctx, &[]);
    let mut victims: Vec<String> = Vec::new();
    wait_for("a scale-in under way", 60, &d, || {
        let started = Aws::scale_in_decisions(&ctx).into_iter().find(|x| x["outcome"] == "started");
        victims =
            started.map(|x| x["victims"].as_str().unwrap().split(',').map(String::from).collect()).unwrap_or_default();
        !victims.is_empty()
    });
    // The operator's drain, while opsd's own DRAINING is still being retried.
    let arn = a.arn_of(&c, &victims[0]);
    a.rt.block_on(
        a.ecs
            .update_container_instances_state()
            .cluster(&c.name)
            .container_instances(&arn)
            .status(aws_sdk_ecs::types::ContainerInstanceStatus::Draining)
            .send(),
    )
    .unwrap();
    d.signal("-KILL");
    let _ = d.wait(Duration::from_secs(10));
    faults(&ctx, serde_json::json!({}));
    let d = Daemon::start(&ctx, &[("OPSD_CAPACITY__SCALE_IN_COOLDOWN", "10m")]);
    wait_for("the unfinished scale-in looked at", 30, &d, || d.log().contains("an unfinished scale-in"));
    wait_for("the warning about the drain that is not opsd's", 30, &d, || d.log().contains("but not by opsd"));
    let log = d.stop_ok();
    assert!(
        a.draining(&c).contains(&victims[0]),
        "the operator's drain of {} was undone: {:?}\n{log}",
        victims[0],
        a.statuses(&c)
    );
}

/// When the fleet refuses the lowered target after the drain (its request was cancelled meanwhile),
/// the drained instances go back to ACTIVE and nothing is terminated.
#[test]
fn a_refused_target_change_puts_the_drained_instances_back() {
    let a = aws();
    // The tasks the drain stops take 10 s to stop: time to cancel the request meanwhile.
    let c = cluster_with(&a, 3, Some(10));
    a.register_room(&c);
    // One task per c5.large (two do not fit its memory), the m5.large outside the fleet has room
    // for two: two c5.large are drained, their tasks moved.
    let td = a.task_def(1024, 2048);
    a.service(&c, "api", &td, 3);
    let before = a.members(&c);
    let ctx = ctx_for(&c, "");
    let d = Daemon::start(&ctx, &[]);
    wait_for("two instances draining", 30, &d, || a.draining(&c).len() == 2);
    // Cancelled while they drain: the lowered target is refused once their tasks have stopped.
    a.rt.block_on(
        a.ec2.cancel_spot_fleet_requests().spot_fleet_request_ids(&c.fleet).terminate_instances(false).send(),
    )
    .unwrap();
    wait_for("the refused target change", 40, &d, || d.log().contains("acting on the decision failed"));
    let log = d.stop_ok();
    assert!(log.contains("FleetNotInModifiableState"), "{log}");
    assert!(a.draining(&c).is_empty(), "instances left DRAINING: {:?}", a.statuses(&c));
    for id in &before {
        assert_eq!(a.state(id), "running");
    }
    let decisions = Aws::scale_in_decisions(&ctx);
    assert!(
        decisions
            .iter()
            .any(|d| d["outcome"] == "failed" && d["error"].as_str().unwrap().contains("set back to ACTIVE")),
        "{decisions:?}"
    );
    // `capacity status` says why it cannot show the fleet, and exits 69.
    let out = ctx.run(&["capacity", "status"]);
    assert_eq!(out.status.code(), Some(69));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("is cancelled_running") && text.contains("last decisions:"), "{text}");
}

/// Issue 14, section 2: a scale-in whose victims run a service at minimumHealthyPercent = 100 with
/// maximumPercent = 100 (no room to start a replacement first) cannot drain, as in ECS: the drain
/// times out, the victims go back to ACTIVE, nothing is terminated, and the decision names the
/// service and the setting that holds it.
#[test]
fn a_drain_held_by_minimum_healthy_percent_is_undone() {
    let a = aws();
    let c = cluster(&a, 4);
    a.register_room(&c);
    // One task per c5.large (two do not fit its memory); the m5.large outside the fleet has room
    // for two, so the controller drains two c5.large, but ECS may neither stop a task first (100 %)
    // nor start its replacement first (maximumPercent 100).
    let td = a.task_def(1024, 2048);
    let conf = aws_sdk_ecs::types::DeploymentConfiguration::builder()
        .minimum_healthy_percent(100)
        .maximum_percent(100)
        .build();
    a.rt.block_on(
        a.ecs
            .create_service()
            .cluster(&c.name)
            .service_name("api")
            .task_definition(&td)
            .desired_count(4)
            .deployment_configuration(conf)
            .send(),
    )
    .unwrap();
    assert_eq!(a.running(&c, "api"), 4);
    let before = a.members(&c);
    let ctx = ctx_for(&c, "drain_timeout = \"4s\"\n");
    let d = Daemon::start(&ctx, &[]);
    wait_for("two instances draining", 30, &d, || a.draining(&c).len() == 2);
    wait_for("the drain to time out", 60, &d, || {
        Aws::scale_in_decisions(&ctx).iter().any(|x| x["outcome"] == "failed")
    });
    // (The controller would try again after its cooldown; a stop undoes a drain under way too.)
    d.stop_ok();
    assert!(a.draining(&c).is_empty(), "instances left DRAINING: {:?}", a.statuses(&c));
    assert_eq!(a.fleet(&c), (4, 4.0), "the target changed");
    for id in &before {
        assert_eq!(a.state(id), "running", "{id} was terminated");
    }
    assert_eq!(a.running(&c, "api"), 4);
    let decisions = Aws::scale_in_decisions(&ctx);
    let failed = decisions.iter().find(|x| x["outcome"] == "failed").unwrap();
    let error = failed["error"].as_str().unwrap();
    for want in [
        "after the drain timeout; nothing terminated",
        "service api has minimumHealthyPercent 100",
        "its maximumPercent 100 leaves no room to start one",
        "set back to ACTIVE",
    ] {
        assert!(error.contains(want), "{want:?} missing from {error}");
    }
}

/// Issue 14, 3.3: an instance of the fleet that has not registered with the cluster
/// `register_timeout` after its launch no longer counts as launching: it is reported by id in
/// `capacity status` and the log, and scale-in is no longer held back by it.
#[test]
fn an_instance_that_never_registers_stops_holding_scale_in_back() {
    let a = aws();
    let c = cluster(&a, 3);
    // One of the three leaves the cluster (as if its agent had never registered it): EC2 and the
    // fleet still count it; ECS does not.
    let first = a.container_instances(&c).swap_remove(0);
    let (arn, lost) =
        (first.container_instance_arn().unwrap().to_string(), first.ec2_instance_id().unwrap().to_string());
    a.rt.block_on(a.ecs.deregister_container_instance().cluster(&c.name).container_instance(&arn).force(true).send())
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let ctx = ctx_for(&c, "register_timeout = \"1s\"\n");
    let s = status(&ctx);
    let never = s["never_registered"].as_array().unwrap();
    assert_eq!(never.len(), 1, "{s}");
    assert_eq!(never[0]["instance"], lost.as_str());
    let d = Daemon::start(&ctx, &[]);
    // Nothing runs: below target, and nothing launching any more, so the fleet scales in.
    wait_for("a scale-in", 60, &d, || Aws::scale_in_decisions(&ctx).iter().any(|x| x["outcome"] == "acted"));
    let log = d.stop_ok();
    assert!(
        log.contains(&format!("instance {lost} of")) && log.contains("has not registered with the cluster"),
        "{log}"
    );
    let decisions = Aws::scale_in_decisions(&ctx);
    assert!(
        !decisions.iter().any(|x| x["reason"].as_str().unwrap_or_default().contains("still launching")),
        "{decisions:?}"
    );
}

/// The drain's check that an instance is empty reads every page of its tasks: here each victim has
/// 101 long-stopped tasks listed before the one the drain stops, which takes 8 s to stop. Terminated
/// earlier, that task would end with "Host EC2 instance terminated".
#[test]
fn a_drain_waits_for_tasks_listed_past_the_first_page() {
    let a = aws();
    let c = cluster(&a, 3);
    a.register_room(&c);
    let fleet: Vec<String> = a.rt.block_on(async {
        let out = a.ec2.describe_spot_fleet_instances().spot_fleet_request_id(&c.fleet).send().await.unwrap();
        out.active_instances().iter().map(|i| i.instance_id().unwrap().to_string()).collect()
    });
    let fleet_arns: Vec<String> = a
        .container_instances(&c)
        .iter()
        .filter(|ci| fleet.iter().any(|f| Some(f.as_str()) == ci.ec2_instance_id()))
        .map(|ci| ci.container_instance_arn().unwrap().to_string())
        .collect();
    assert_eq!(fleet_arns.len(), 3);
    let tiny = a.task_def(8, 8);
    a.rt.block_on(async {
        for _ in 0..101 {
            let out = a
                .ecs
                .start_task()
                .cluster(&c.name)
                .task_definition(&tiny)
                .set_container_instances(Some(fleet_arns.clone()))
                .send()
                .await
                .unwrap();
            for t in out.tasks() {
                a.ecs.stop_task().cluster(&c.name).task(t.task_arn().unwrap()).send().await.unwrap();
            }
        }
        let arn = a.ecs.describe_clusters().clusters(&c.name).send().await.unwrap().clusters()[0]
            .cluster_arn()
            .unwrap()
            .to_string();
        let tag = aws_sdk_ecs::types::Tag::builder().key("moto:task-stop-seconds").value("8").build();
        a.ecs.tag_resource().resource_arn(arn).tags(tag).send().await.unwrap();
    });
    // One task per c5.large (two do not fit its memory); the m5.large has room for two.
    let td = a.task_def(1024, 2048);
    a.service(&c, "api", &td, 3);
    let ctx = ctx_for(&c, "");
    let d = Daemon::start(&ctx, &[]);
    wait_for("the fleet at 1", 60, &d, || a.fleet(&c) == (1, 1.0) && a.members(&c).len() == 2);
    d.stop_ok();
    assert_eq!(a.running(&c, "api"), 3);
    a.assert_no_task_cut_short(&c);
}

/// More than ten instances go in one scale-in (UpdateContainerInstancesState takes ten at a time).
#[test]
fn more_than_ten_instances_go_in_one_scale_in() {
    let a = aws();
    let c = cluster(&a, 13);
    let td = a.task_def(1024, 1024);
    a.service(&c, "api", &td, 2);
    let ctx = ctx_for(&c, "max_capacity = 20\nmax_scale_in_step = 12");
    let d = Daemon::start(&ctx, &[]);
    wait_for("the fleet at 2", 60, &d, || a.fleet(&c) == (2, 2.0) && a.members(&c).len() == 2);
    d.stop_ok();
    let acted: Vec<Value> = Aws::scale_in_decisions(&ctx).into_iter().filter(|d| d["outcome"] == "acted").collect();
    assert_eq!(acted.len(), 1, "{acted:?}");
    assert_eq!(acted[0]["victims"].as_str().unwrap().split(',').count(), 11, "{}", acted[0]);
    assert_eq!(a.running(&c, "api"), 2);
}

/// Without drain_before_scale_in, only instances that run nothing may go: here every fleet instance
/// runs a service task (which would fit on the m5.large outside the fleet), so none goes, and no
/// task is stopped by a drain.
#[test]
fn without_draining_only_empty_instances_go() {
    let a = aws();
    let c = cluster(&a, 3);
    a.register_room(&c);
    let td = a.task_def(1024, 2048);
    a.service(&c, "api", &td, 3);
    let ctx = ctx_for(&c, "drain_before_scale_in = false");
    let d = Daemon::start(&ctx, &[("OPSD_LOG", "opsd=debug")]);
    wait_for("the controller to find no instance that may go", 30, &d, || {
        d.log().contains("1 outside the fleet, 3 running tasks while drain_before_scale_in is off")
    });
    d.stop_ok();
    assert_eq!(a.fleet(&c), (3, 3.0));
    assert_eq!(a.running(&c, "api"), 3);
    let reasons = a.stopped_reasons(&c);
    assert!(!reasons.iter().any(|r| r.contains("draining")), "{reasons:?}");
    assert!(Aws::scale_in_decisions(&ctx).is_empty());
    // `capacity status` answers "why is it not scaling in?": the daemon's latest evaluation, and
    // its own with the daemon's below-target clock (alone it would start the cooldown afresh).
    let s = status(&ctx);
    let why =
        "no instance can go (passed over: 1 outside the fleet, 3 running tasks while drain_before_scale_in is off)";
    assert!(s["daemon"]["reason"].as_str().unwrap().contains(why), "{s}");
    assert!(s["decision_now"]["reason"].as_str().unwrap().contains(why), "{s}");
}

/// A DAEMON service short of its count lacks room on one instance; new instances bring their own
/// task, so it is no demand for capacity.
#[test]
fn daemon_services_are_not_demand() {
    let a = aws();
    let c = cluster(&a, 2);
    // One instance full with a standalone task: the daemon fits only on the other.
    let big = a.task_def(2048, 1024);
    let run = a.rt.block_on(a.ecs.run_task().cluster(&c.name).task_definition(&big).count(1).send()).unwrap();
    assert_eq!(run.tasks().len(), 1);
    let agent = a.task_def(512, 256);
    a.daemon_service(&c, "agent", &agent);
    assert_eq!(a.running(&c, "agent"), 1);
    let s = status(&ctx_for(&c, ""));
    assert_eq!(s["unplaced_tasks"].as_u64(), Some(0), "{s}");
    assert_eq!(s["short_services"], serde_json::json!([]), "{s}");
    assert_ne!(s["decision_now"]["action"], "scale_out", "{s}");
}

/// An Auto Scaling group launched from a launch template (no instance yet, no override naming a
/// type): the template names the type, so the unplaced tasks buy capacity.
#[test]
fn a_group_launched_from_a_template_scales_out_from_zero() {
    let a = aws();
    let c = cluster(&a, 0);
    let group = unique("asg");
    let asg = aws_sdk_autoscaling::Client::new(&sdk_config(&a.rt));
    a.rt.block_on(async {
        let user_data = base64_encode(&format!("#!/bin/bash\necho ECS_CLUSTER={} >> /etc/ecs/ecs.config\n", c.name));
        let data = aws_sdk_ec2::types::RequestLaunchTemplateData::builder()
            .image_id("ami-760aaa0f")
            .instance_type(aws_sdk_ec2::types::InstanceType::C5Large)
            .user_data(user_data)
            .build();
        let lt = a
            .ec2
            .create_launch_template()
            .launch_template_name(&group)
            .launch_template_data(data)
            .send()
            .await
            .unwrap();
        let lt = lt.launch_template().unwrap().launch_template_id().unwrap().to_string();
        asg.create_auto_scaling_group()
            .auto_scaling_group_name(&group)
            .launch_template(
                aws_sdk_autoscaling::types::LaunchTemplateSpecification::builder()
                    .launch_template_id(lt)
                    .version("$Latest")
                    .build(),
            )
            .min_size(0)
            .max_size(10)
            .desired_capacity(0)
            .vpc_zone_identifier(&c.subnet)
            .send()
            .await
            .unwrap();
    });
    let td = a.task_def(1024, 1024);
    a.service(&c, "api", &td, 2);
    let ctx = Ctx::with_config_extra(&format!(
        "[capacity]\ncluster = \"{}\"\nauto_scaling_group = \"{group}\"\nmin_capacity = 0\nmax_capacity = 10\ninterval = \"1s\"\n",
        c.name
    ));
    let s = status(&ctx);
    // Two tasks of 1024 CPU: one c5.large holds them, the 80 % target asks for 2560 CPU: two.
    assert_eq!(
        (s["decision_now"]["action"].as_str(), s["decision_now"]["to_capacity"].as_f64()),
        (Some("scale_out"), Some(2.0)),
        "{s}"
    );
}

/// Without draining, an instance that runs only DAEMON services' tasks counts as empty: it goes
/// (its DAEMON task ends with it), while the instance with the service task stays.
#[test]
fn without_draining_instances_running_only_daemon_tasks_go() {
    let a = aws();
    let c = cluster(&a, 3);
    let agent = a.task_def(256, 256);
    a.daemon_service(&c, "agent", &agent);
    assert_eq!(a.running(&c, "agent"), 3);
    let td = a.task_def(1024, 1024);
    a.service(&c, "api", &td, 1);
    let ctx = ctx_for(&c, "drain_before_scale_in = false");
    let d = Daemon::start(&ctx, &[]);
    wait_for("the fleet at 1", 60, &d, || a.fleet(&c) == (1, 1.0) && a.members(&c).len() == 1);
    d.stop_ok();
    assert_eq!(a.running(&c, "api"), 1);
    // The service's task never moved; the removed instances' DAEMON tasks ended with them.
    let stopped = a.stopped(&c);
    assert!(!stopped.iter().any(|(g, _)| g == "service:api"), "{stopped:?}");
    assert_eq!(stopped.iter().filter(|(g, _)| g == "service:agent").count(), 2, "{stopped:?}");
}
