//! What the controller sees: the cluster's container instances with their resources and tasks, the
//! demand that has no room, and the fleet's capacity and instance types (through [`super::fleet`]).
//! Every list is paginated; every call has the SDK's timeouts.

use super::fleet::{CapacityTarget, FleetError};
use super::policy::{Fleet, Instance, InstanceType, Observation, Resources};
use super::Clients;
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
    /// Task groups (`service:NAME`) of the cluster's DAEMON services.
    pub daemon_groups: std::collections::HashSet<String>,
    /// The fleet's own figures (`fleet` above is adjusted: its target is the larger of the two, and
    /// only instances registered in the cluster count as fulfilled, so one started but not yet
    /// registered counts as launching).
    pub raw_target: f64,
    pub raw_fulfilled: f64,
    /// Instances of the fleet not registered with the cluster longer than `register_timeout` after
    /// their launch: (EC2 id, seconds since launch). They no longer count as launching.
    pub never_registered: Vec<(String, u64)>,
}

#[derive(Debug, thiserror::Error)]
pub enum ObserveError {
    #[error(transparent)]
    Aws(#[from] CallError),
    #[error("ECS cluster {0} was not found; check [capacity] cluster and the region")]
    NoCluster(String),
    #[error(transparent)]
    Fleet(#[from] FleetError),
    #[error("{0} is {1}: it launches nothing and cannot be modified; point [capacity] at an active one")]
    NotActive(CapacityTarget, String),
}

fn member(ci: &aws_sdk_ecs::types::ContainerInstance) -> Member {
    Member {
        arn: ci.container_instance_arn().unwrap_or_default().to_string(),
        ec2_id: ci.ec2_instance_id().unwrap_or_default().to_string(),
        running: ci.running_tasks_count(),
        pending: ci.pending_tasks_count(),
        status: ci.status().unwrap_or_default().to_string(),
    }
}

/// The cluster's container instances on the given EC2 instances (those still registered).
pub async fn members_of(c: &Clients, cluster: &str, ec2_ids: &[String]) -> Result<Vec<Member>, ObserveError> {
    let arns = container_instance_arns(c, cluster).await?;
    Ok(describe_container_instances(c, cluster, &arns)
        .await?
        .iter()
        .filter(|ci| ci.ec2_instance_id().is_some_and(|id| ec2_ids.iter().any(|v| v == id)))
        .map(member)
        .collect())
}

/// Fleet states in which the fleet launches and can be modified (`modifying` is held in `decide`).
const LIVE_FLEET_STATES: [&str; 3] = ["submitted", "active", "modifying"];

pub async fn observe(
    c: &Clients,
    cluster: &str,
    target: &CapacityTarget,
    register_timeout: std::time::Duration,
) -> Result<Seen, ObserveError> {
    let fleet = target.describe(c).await?;
    let fleet_state = fleet.status.state.clone();
    if !LIVE_FLEET_STATES.contains(&fleet_state.as_str()) {
        return Err(ObserveError::NotActive(target.clone(), fleet_state));
    }
    let arns = container_instance_arns(c, cluster).await?;
    let mut members = HashMap::new();
    let mut instances = Vec::new();
    let mut by_arn: HashMap<String, usize> = HashMap::new();
    for ci in &describe_container_instances(c, cluster, &arns).await? {
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
            in_fleet: fleet.members.contains_key(&ec2_id),
            instance_type,
            registered: resources(ci.registered_resources()),
            remaining: resources(ci.remaining_resources()),
            tasks: Vec::new(),
            draining: status == "DRAINING",
            pinned: false,
            daemon: Resources::default(),
        });
        members.insert(ec2_id, member(ci));
    }
    // Tasks: on their instances, or (PROVISIONING without an instance) unplaced. Fargate tasks need
    // no instance and are not this fleet's business.
    let mut defs = TaskDefs::default();
    let mut unplaced = Vec::new();
    let mut provisioning: HashMap<String, i32> = HashMap::new();
    // Each service's tasks on an instance, as the task list shows them.
    let mut placed: HashMap<String, i32> = HashMap::new();
    let all_services = services(c, cluster).await?;
    let daemons: std::collections::HashSet<&str> = all_services
        .iter()
        .filter(|s| s.scheduling_strategy().is_some_and(|x| x.as_str() == "DAEMON"))
        .filter_map(|s| s.service_name())
        .collect();
    for task in running_tasks(c, cluster).await? {
        if fargate(task.launch_type(), task.capacity_provider_name()) {
            continue;
        }
        let Some(def) = task.task_definition_arn() else { continue };
        let res = defs.resources(c, def).await?;
        let group = task.group().unwrap_or_default();
        if let (Some(_), Some(svc)) = (task.container_instance_arn(), group.strip_prefix("service:")) {
            *placed.entry(svc.to_string()).or_default() += 1;
        }
        match task.container_instance_arn().and_then(|a| by_arn.get(a)) {
            Some(i) => {
                // A DAEMON service's task belongs to its instance: not moved, not keeping it busy.
                if group.strip_prefix("service:").is_some_and(|svc| daemons.contains(svc)) {
                    instances[*i].daemon = instances[*i].daemon.plus(res);
                } else {
                    instances[*i].tasks.push(res);
                }
                // A drain moves service tasks; a standalone task keeps its instance.
                if !group.starts_with("service:") {
                    instances[*i].pinned = true;
                }
            }
            // A DAEMON service's task belongs to one instance: a new instance brings its own.
            None if matches!(task.last_status(), Some("PROVISIONING") | Some("PENDING"))
                && !group.strip_prefix("service:").is_some_and(|svc| daemons.contains(svc)) =>
            {
                unplaced.push(res);
                if let Some(svc) = group.strip_prefix("service:") {
                    *provisioning.entry(svc.to_string()).or_default() += 1;
                }
            }
            None => {}
        }
    }
    // Services short of their desired count: the tasks ECS could not place (less those already
    // counted as PROVISIONING above).
    let mut short_services = Vec::new();
    for svc in &all_services {
        if fargate(svc.launch_type(), svc.capacity_provider_strategy().first().map(|s| s.capacity_provider())) {
            continue;
        }
        // A DAEMON service short of its count lacks room on particular instances: new instances
        // each bring their own task, so none of its tasks is demand for capacity.
        if svc.scheduling_strategy().is_some_and(|x| x.as_str() == "DAEMON") {
            continue;
        }
        let name = svc.service_name().unwrap_or_default().to_string();
        let missing = missing_tasks(
            svc.desired_count(),
            svc.running_count() + svc.pending_count(),
            placed.get(&name).copied().unwrap_or(0),
            provisioning.get(&name).copied().unwrap_or(0),
        );
        if missing <= 0 {
            continue;
        }
        let Some(def) = svc.task_definition() else { continue };
        let res = defs.resources(c, def).await?;
        unplaced.extend(std::iter::repeat_n(res, missing as usize));
        short_services.push((name, missing as usize));
    }
    // Instance types: as registered where one is, else from DescribeInstanceTypes.
    let mut types = Vec::new();
    for (name, weight) in &fleet.types {
        let seen_res =
            instances.iter().filter(|i| &i.instance_type == name).map(|i| i.registered).min_by_key(|r| (r.mem, r.cpu));
        let resources = match seen_res {
            Some(r) => r,
            None => instance_type(c, name).await?,
        };
        types.push(InstanceType { name: name.clone(), resources, weight: *weight });
    }
    // Present: the fleet's instances registered in the cluster. Started but not yet registered
    // (the ECS agent takes a minute or two) counts as launching, not as nothing.
    let weight = |t: &str| fleet.types.iter().find(|(n, _)| n == t).map(|(_, w)| *w).unwrap_or(1.0);
    // (+ 0.0: an empty f64 sum is -0.0, which status would print as "-0".)
    let present: f64 = instances.iter().filter(|i| i.in_fleet).map(|i| weight(&i.instance_type)).sum::<f64>() + 0.0;
    // An instance that has not registered long after its launch (a broken agent, a wrong
    // ECS_CLUSTER, a missing role) is no longer launching: it would hold scale-in back for ever.
    let unregistered: Vec<String> =
        fleet.members.keys().filter(|id| !instances.iter().any(|i| &i.id == *id)).cloned().collect();
    let never_registered = launched_before(c, &unregistered, register_timeout).await?;
    let present = present + never_registered.iter().map(|(id, _)| weight(&fleet.members[id])).sum::<f64>();
    Ok(Seen {
        observation: Observation { instances, unplaced },
        fleet: Fleet { target: fleet.status.target.max(fleet.status.fulfilled), fulfilled: present, types },
        members,
        short_services,
        fleet_state,
        daemon_groups: daemons.iter().map(|d| format!("service:{d}")).collect(),
        raw_target: fleet.status.target,
        raw_fulfilled: fleet.status.fulfilled,
        never_registered,
    })
}

/// How many of a service's tasks have no place: its desired count less the tasks it has (`counted`:
/// its running and pending counters; `placed`: its tasks on an instance in the task list), less
/// those PROVISIONING without an instance (already unplaced demand). ECS updates the counters after
/// it places a task, while the task list and the instance's remaining resources show the task at
/// once: a task read as placed must not count as missing too, or the controller buys an instance
/// for a task that has one. So the larger of the two counts; reading the instances before the
/// tasks, a task placed in between is at worst counted nowhere for one interval.
fn missing_tasks(desired: i32, counted: i32, placed: i32, provisioning: i32) -> i32 {
    desired - counted.max(placed) - provisioning
}

/// Of `ids`, those launched more than `limit` ago, with the seconds since their launch (instances
/// EC2 no longer knows are left out: they are not the fleet's any more).
async fn launched_before(
    c: &Clients,
    ids: &[String],
    limit: std::time::Duration,
) -> Result<Vec<(String, u64)>, CallError> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs() as i64;
    let mut out = Vec::new();
    for chunk in ids.chunks(100) {
        // A filter, not InstanceIds: one id EC2 does not show yet (just launched) is simply not
        // listed, and still counts as launching, without hiding the others.
        let filter = aws_sdk_ec2::types::Filter::builder().name("instance-id").set_values(Some(chunk.to_vec())).build();
        let r = c.ec2.describe_instances().filters(filter).send().await;
        let page = r.map_err(|e| call_error("DescribeInstances", e))?;
        for i in page.reservations().iter().flat_map(|r| r.instances()) {
            let (Some(id), Some(at)) = (i.instance_id(), i.launch_time()) else { continue };
            let age = (now - at.secs()).max(0) as u64;
            if age >= limit.as_secs() {
                out.push((id.to_string(), age));
            }
        }
    }
    out.sort();
    Ok(out)
}

fn fargate(launch_type: Option<&aws_sdk_ecs::types::LaunchType>, provider: Option<&str>) -> bool {
    launch_type.is_some_and(|l| l.as_str() == "FARGATE") || provider.is_some_and(|p| p.starts_with("FARGATE"))
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
    Ok(describe_tasks(c, cluster, &arns).await?)
}

/// DescribeContainerInstances over any number of ARNs (100 per call).
pub(super) async fn describe_container_instances(
    c: &Clients,
    cluster: &str,
    arns: &[String],
) -> Result<Vec<aws_sdk_ecs::types::ContainerInstance>, CallError> {
    let mut out = Vec::new();
    for chunk in arns.chunks(100) {
        let r = c
            .ecs
            .describe_container_instances()
            .cluster(cluster)
            .set_container_instances(Some(chunk.to_vec()))
            .send()
            .await
            .map_err(|e| call_error("DescribeContainerInstances", e))?;
        out.extend(r.container_instances().iter().cloned());
    }
    Ok(out)
}

/// DescribeTasks over any number of ARNs (100 per call).
pub(super) async fn describe_tasks(
    c: &Clients,
    cluster: &str,
    arns: &[String],
) -> Result<Vec<aws_sdk_ecs::types::Task>, CallError> {
    let mut out = Vec::new();
    for chunk in arns.chunks(100) {
        let r = c
            .ecs
            .describe_tasks()
            .cluster(cluster)
            .set_tasks(Some(chunk.to_vec()))
            .send()
            .await
            .map_err(|e| call_error("DescribeTasks", e))?;
        out.extend(r.tasks().iter().cloned());
    }
    Ok(out)
}

async fn services(c: &Clients, cluster: &str) -> Result<Vec<aws_sdk_ecs::types::Service>, ObserveError> {
    let mut pages = c.ecs.list_services().cluster(cluster).max_results(100).into_paginator().send();
    let mut arns = Vec::new();
    while let Some(page) = pages.next().await {
        arns.extend(page.map_err(|e| call_error("ListServices", e))?.service_arns().iter().cloned());
    }
    Ok(describe_services(c, cluster, &arns).await?.into_iter().filter(|s| s.status() == Some("ACTIVE")).collect())
}

/// DescribeServices for `names` (names or ARNs), 10 per call as ECS takes them.
pub async fn describe_services(
    c: &Clients,
    cluster: &str,
    names: &[String],
) -> Result<Vec<aws_sdk_ecs::types::Service>, CallError> {
    let mut out = Vec::new();
    for chunk in names.chunks(10) {
        let r = c
            .ecs
            .describe_services()
            .cluster(cluster)
            .set_services(Some(chunk.to_vec()))
            .send()
            .await
            .map_err(|e| call_error("DescribeServices", e))?;
        out.extend(r.services().iter().cloned());
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
/// (memoryReservation, which placement reserves, or memory where no reservation is given).
pub fn task_resources(td: &aws_sdk_ecs::types::TaskDefinition) -> Resources {
    let task_cpu = td.cpu().and_then(|c| c.parse::<u32>().ok());
    let task_mem = td.memory().and_then(|m| m.parse::<u32>().ok());
    let (mut cpu, mut mem) = (0u32, 0u32);
    for c in td.container_definitions() {
        cpu += c.cpu().max(0) as u32;
        // Placement reserves the soft limit when one is given, else the hard limit.
        mem += c.memory_reservation().or(c.memory()).unwrap_or(0).max(0) as u32;
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

#[cfg(test)]
mod tests {
    use super::missing_tasks;

    #[test]
    fn tasks_placed_before_the_counters_follow_are_not_missing() {
        // 5 wanted, 1 counted: 4 missing.
        assert_eq!(missing_tasks(5, 1, 1, 0), 4);
        // The scheduler placed the other 4; the counters still say 1: none is missing.
        assert_eq!(missing_tasks(5, 1, 5, 0), 0);
        // Counters behind stopped tasks (still counted, no longer listed): the counters hold.
        assert_eq!(missing_tasks(5, 5, 3, 0), 0);
        // PROVISIONING tasks are unplaced demand already, counted once.
        assert_eq!(missing_tasks(5, 1, 1, 2), 2);
        // More than desired (a scale-in under way): nothing missing, never a negative count used.
        assert!(missing_tasks(2, 4, 4, 0) <= 0);
    }
}
