//! What the controller sees: the cluster's container instances with their resources and tasks, the
//! demand that has no room, and the Spot Fleet's capacity and instance types. Every list is paginated;
//! every call has the SDK's timeouts.

use super::policy::{Fleet, Instance, InstanceType, Observation, Resources};
use crate::aws::{call_error, CallError};
use std::collections::HashMap;

/// ECS reports a little less memory than the instance type has (the OS and agent keep some). For a
/// type with no registered instance yet, its memory is taken at this fraction: on the safe side for
/// the types measured (90.4–95 %), so new instances are never assumed bigger than they will be.
const MEMORY_REGISTERED_FRACTION: f64 = 0.9;

/// A container instance, with what acting on it needs.
#[derive(Debug, Clone)]
pub struct Member {
    pub arn: String,
    pub ec2_id: String,
    pub running: i32,
    pub pending: i32,
    pub status: String,
}

/// One observation of cluster and fleet.
#[derive(Debug, Clone)]
pub struct Seen {
    pub observation: Observation,
    pub fleet: Fleet,
    /// By EC2 instance id.
    pub members: HashMap<String, Member>,
    /// Services short of their desired count, with how many tasks each misses.
    pub short_services: Vec<(String, usize)>,
    /// The fleet's request state (`active`, `modifying`, …).
    pub fleet_state: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ObserveError {
    #[error(transparent)]
    Aws(#[from] CallError),
    #[error("ECS cluster {0} was not found; check [capacity] cluster and the region")]
    NoCluster(String),
    #[error("Spot Fleet request {0} was not found; check [capacity] spot_fleet_request_id and the region")]
    NoFleet(String),
}

pub struct Clients {
    pub ecs: aws_sdk_ecs::Client,
    pub ec2: aws_sdk_ec2::Client,
}

pub async fn observe(c: &Clients, cluster: &str, fleet_id: &str) -> Result<Seen, ObserveError> {
    let (fleet, fleet_state) = fleet(c, fleet_id).await?;
    let arns = container_instance_arns(c, cluster).await?;
    let mut members = HashMap::new();
    let mut instances = Vec::new();
    let mut by_arn: HashMap<String, usize> = HashMap::new();
    for chunk in arns.chunks(100) {
        let out = c
            .ecs
            .describe_container_instances()
            .cluster(cluster)
            .set_container_instances(Some(chunk.to_vec()))
            .send()
            .await
            .map_err(|e| call_error("DescribeContainerInstances", e))?;
        for ci in out.container_instances() {
            let status = ci.status().unwrap_or_default().to_string();
            if status != "ACTIVE" && status != "DRAINING" {
                continue;
            }
            let ec2_id = ci.ec2_instance_id().unwrap_or_default().to_string();
            let arn = ci.container_instance_arn().unwrap_or_default().to_string();
            let instance_type = ci
                .attributes()
                .iter()
                .find(|a| a.name() == "ecs.instance-type")
                .and_then(|a| a.value())
                .unwrap_or_default()
                .to_string();
            by_arn.insert(arn.clone(), instances.len());
            instances.push(Instance {
                id: ec2_id.clone(),
                instance_type,
                registered: resources(ci.registered_resources()),
                remaining: resources(ci.remaining_resources()),
                tasks: Vec::new(),
                draining: status == "DRAINING",
            });
            members.insert(
                ec2_id.clone(),
                Member { arn, ec2_id, running: ci.running_tasks_count(), pending: ci.pending_tasks_count(), status },
            );
        }
    }
    // Tasks: on their instances, or (PROVISIONING without an instance) unplaced.
    let mut defs = TaskDefs::default();
    let mut unplaced = Vec::new();
    for task in running_tasks(c, cluster).await? {
        let Some(def) = task.task_definition_arn() else { continue };
        let res = defs.resources(c, def).await?;
        match task.container_instance_arn().and_then(|a| by_arn.get(a)) {
            Some(i) => instances[*i].tasks.push(res),
            None if matches!(task.last_status(), Some("PROVISIONING") | Some("PENDING")) => unplaced.push(res),
            None => {}
        }
    }
    // Services short of their desired count: the tasks ECS could not place.
    let mut short_services = Vec::new();
    for svc in services(c, cluster).await? {
        let missing = svc.desired_count() - svc.running_count() - svc.pending_count();
        if missing <= 0 {
            continue;
        }
        let Some(def) = svc.task_definition() else { continue };
        let res = defs.resources(c, def).await?;
        unplaced.extend(std::iter::repeat_n(res, missing as usize));
        short_services.push((svc.service_name().unwrap_or_default().to_string(), missing as usize));
    }
    // Instance types: as registered where one is, else from DescribeInstanceTypes.
    let mut types = Vec::new();
    for (name, weight) in fleet.types {
        let seen_res =
            instances.iter().filter(|i| i.instance_type == name).map(|i| i.registered).min_by_key(|r| (r.mem, r.cpu));
        let resources = match seen_res {
            Some(r) => r,
            None => instance_type(c, &name).await?,
        };
        types.push(InstanceType { name, resources, weight });
    }
    Ok(Seen {
        observation: Observation { instances, unplaced },
        fleet: Fleet { target: fleet.target, fulfilled: fleet.fulfilled, types },
        members,
        short_services,
        fleet_state,
    })
}

struct FleetRaw {
    target: f64,
    fulfilled: f64,
    types: Vec<(String, f64)>,
}

async fn fleet(c: &Clients, id: &str) -> Result<(FleetRaw, String), ObserveError> {
    let out = c.ec2.describe_spot_fleet_requests().spot_fleet_request_ids(id).send().await;
    let out = match out {
        Ok(o) => o,
        Err(e) => {
            let e = call_error("DescribeSpotFleetRequests", e);
            if e.code.as_deref().is_some_and(|c| c.contains("NotFound") || c == "InvalidSpotFleetRequestId.Malformed") {
                return Err(ObserveError::NoFleet(id.into()));
            }
            return Err(e.into());
        }
    };
    let Some(cfg) = out.spot_fleet_request_configs().first() else { return Err(ObserveError::NoFleet(id.into())) };
    let state = cfg.spot_fleet_request_state().map(|s| s.as_str().to_string()).unwrap_or_default();
    let Some(conf) = cfg.spot_fleet_request_config() else { return Err(ObserveError::NoFleet(id.into())) };
    let mut types: Vec<(String, f64)> = Vec::new();
    for spec in conf.launch_specifications() {
        if let Some(t) = spec.instance_type() {
            let w = spec.weighted_capacity().unwrap_or(1.0);
            if !types.iter().any(|(n, _)| n == t.as_str()) {
                types.push((t.as_str().to_string(), w));
            }
        }
    }
    for ltc in conf.launch_template_configs() {
        for o in ltc.overrides() {
            if let Some(t) = o.instance_type() {
                if !types.iter().any(|(n, _)| n == t.as_str()) {
                    types.push((t.as_str().to_string(), o.weighted_capacity().unwrap_or(1.0)));
                }
            }
        }
    }
    let raw = FleetRaw {
        target: f64::from(conf.target_capacity().unwrap_or(0)),
        fulfilled: conf.fulfilled_capacity().unwrap_or(0.0),
        types,
    };
    Ok((raw, state))
}

async fn container_instance_arns(c: &Clients, cluster: &str) -> Result<Vec<String>, ObserveError> {
    let mut pages = c.ecs.list_container_instances().cluster(cluster).max_results(100).into_paginator().send();
    let mut arns = Vec::new();
    while let Some(page) = pages.next().await {
        match page {
            Ok(p) => arns.extend(p.container_instance_arns().iter().cloned()),
            Err(e) => {
                let e = call_error("ListContainerInstances", e);
                if e.code_is("ClusterNotFoundException") {
                    return Err(ObserveError::NoCluster(cluster.into()));
                }
                return Err(e.into());
            }
        }
    }
    Ok(arns)
}

async fn running_tasks(c: &Clients, cluster: &str) -> Result<Vec<aws_sdk_ecs::types::Task>, ObserveError> {
    let mut pages = c
        .ecs
        .list_tasks()
        .cluster(cluster)
        .desired_status(aws_sdk_ecs::types::DesiredStatus::Running)
        .max_results(100)
        .into_paginator()
        .send();
    let mut arns = Vec::new();
    while let Some(page) = pages.next().await {
        arns.extend(page.map_err(|e| call_error("ListTasks", e))?.task_arns().iter().cloned());
    }
    let mut tasks = Vec::new();
    for chunk in arns.chunks(100) {
        let out = c
            .ecs
            .describe_tasks()
            .cluster(cluster)
            .set_tasks(Some(chunk.to_vec()))
            .send()
            .await
            .map_err(|e| call_error("DescribeTasks", e))?;
        tasks.extend(out.tasks().iter().cloned());
    }
    Ok(tasks)
}

async fn services(c: &Clients, cluster: &str) -> Result<Vec<aws_sdk_ecs::types::Service>, ObserveError> {
    let mut pages = c.ecs.list_services().cluster(cluster).max_results(100).into_paginator().send();
    let mut arns = Vec::new();
    while let Some(page) = pages.next().await {
        arns.extend(page.map_err(|e| call_error("ListServices", e))?.service_arns().iter().cloned());
    }
    let mut out = Vec::new();
    for chunk in arns.chunks(10) {
        let r = c
            .ecs
            .describe_services()
            .cluster(cluster)
            .set_services(Some(chunk.to_vec()))
            .send()
            .await
            .map_err(|e| call_error("DescribeServices", e))?;
        out.extend(r.services().iter().filter(|s| s.status() == Some("ACTIVE")).cloned());
    }
    Ok(out)
}

/// Task definitions' CPU and memory, each described once per observation.
#[derive(Default)]
struct TaskDefs(HashMap<String, Resources>);

impl TaskDefs {
    async fn resources(&mut self, c: &Clients, arn: &str) -> Result<Resources, ObserveError> {
        if let Some(r) = self.0.get(arn) {
            return Ok(*r);
        }
        let out = c
            .ecs
            .describe_task_definition()
            .task_definition(arn)
            .send()
            .await
            .map_err(|e| call_error("DescribeTaskDefinition", e))?;
        let r = match out.task_definition() {
            Some(td) => task_resources(td),
            None => Resources::default(),
        };
        self.0.insert(arn.to_string(), r);
        Ok(r)
    }
}

/// A task definition's CPU and memory: task-level values when set, else the sum over containers
/// (memory, or memoryReservation where no hard limit is given).
pub fn task_resources(td: &aws_sdk_ecs::types::TaskDefinition) -> Resources {
    let task_cpu = td.cpu().and_then(|c| c.parse::<u32>().ok());
    let task_mem = td.memory().and_then(|m| m.parse::<u32>().ok());
    let (mut cpu, mut mem) = (0u32, 0u32);
    for c in td.container_definitions() {
        cpu += c.cpu().max(0) as u32;
        mem += c.memory().or(c.memory_reservation()).unwrap_or(0).max(0) as u32;
    }
    Resources::new(task_cpu.unwrap_or(cpu), task_mem.unwrap_or(mem))
}

fn resources(list: &[aws_sdk_ecs::types::Resource]) -> Resources {
    let get =
        |name: &str| list.iter().find(|r| r.name() == Some(name)).map(|r| r.integer_value().max(0) as u32).unwrap_or(0);
    Resources::new(get("CPU"), get("MEMORY"))
}

async fn instance_type(c: &Clients, name: &str) -> Result<Resources, ObserveError> {
    let t = aws_sdk_ec2::types::InstanceType::from(name);
    let out = c
        .ec2
        .describe_instance_types()
        .instance_types(t)
        .send()
        .await
        .map_err(|e| call_error("DescribeInstanceTypes", e))?;
    let info = out.instance_types().first();
    let vcpus = info.and_then(|i| i.v_cpu_info()).and_then(|v| v.default_v_cpus()).unwrap_or(0);
    let mib = info.and_then(|i| i.memory_info()).and_then(|m| m.size_in_mib()).unwrap_or(0);
    Ok(Resources::new(1024 * vcpus.max(0) as u32, (mib as f64 * MEMORY_REGISTERED_FRACTION) as u32))
}
