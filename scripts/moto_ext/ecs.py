"""ECS on EC2 capacity as the ECS developer guide documents it (moto 5.2.5 differs on each point).

- A container instance's registered resources are what RegisterContainerInstance gives in
  `totalResources`, else those of its instance type (CPU 1024 per vCPU; memory as the ECS agent
  reports it: the type's memory less what the OS and agent keep), not a fixed 4096 CPU / 7482 MiB.
- RunTask returns a `RESOURCE:CPU` / `RESOURCE:MEMORY` failure for each task no ACTIVE instance can
  hold (moto returns fewer tasks and no failures, or raises when the cluster has no instance).
- Services run their tasks: a scheduler (every second, and at once on Create/UpdateService) keeps each
  service at its desired count, placing tasks where they fit (binpack on memory) and stopping extras.
  Tasks that fit nowhere are reported in the service's events as AWS words it: "(service NAME) was
  unable to place a task because no container instance met all of its requirements. The closest
  matching (container-instance ID) has insufficient memory available. …". runningCount follows;
  tasks not placed are in neither runningCount nor pendingCount, as in AWS.
- DRAINING instances take no new tasks. The scheduler replaces the service tasks on them as ECS
  documents ("Draining Amazon ECS container instances"): replacements start elsewhere within the
  service's `maximumPercent` of its desired count, and a draining task stops only while the running
  tasks stay at or above `minimumHealthyPercent` (defaults 100 and 200, as in ECS; CreateService's
  deploymentConfiguration is kept, moto dropped it). With 100 % and no room elsewhere a drain never
  finishes, as in AWS. DAEMON tasks on a draining instance stop at once. Standalone tasks keep running.
- An instance launched with user data containing `ECS_CLUSTER=name` registers itself in that cluster
  (as the ECS agent does at boot), and deregisters when it terminates (its tasks stop, those still
  stopping too, with the reason "Host EC2 instance terminated").
- Tasks stay RUNNING until stopped: moto's state manager advanced them on every DescribeTasks.
- DAEMON services run one task on every ACTIVE instance where it fits (desiredCount follows the
  instances); the instances it does not fit on are reported in its events.
- UpdateContainerInstancesState takes at most 10 container instances, and ListTasks returns at most
  `maxResults` (default and most 100) task ARNs per page with a `nextToken`, as in AWS.
- Test-only: a cluster tagged `moto:task-start-seconds=N` keeps each task a service places PENDING
  for N seconds (an image pull) before RUNNING; the service's pendingCount and runningCount follow.
- Test-only: a cluster tagged `moto:service-counts-lag-seconds=N` shows each service's runningCount
  and pendingCount N seconds after the scheduler placed or started its tasks: ECS's counters are
  eventually consistent with the tasks (ListTasks, DescribeTasks) and with the container instances'
  remaining resources, which change at once; two reads are never one snapshot.
- Test-only: a cluster tagged `moto:register-seconds=N` registers an instance launched for it N
  seconds after the launch (the ECS agent takes a minute or two in AWS), not at once.
- Test-only: a cluster tagged `moto:task-stop-seconds=N` keeps each stopped task in lastStatus
  STOPPING for N seconds before STOPPED (as ECS does while containers honour their stopTimeout or a
  load balancer drains), so a drain takes time.
- PutAttributes and DeleteAttributes take a container instance's full ARN as targetId with
  targetType container-instance, as AWS documents ("the short form ID … or the full ARN"); moto
  took only the short ID then. DeleteAttributes of a custom attribute takes its name and target
  without a value, as AWS documents (moto deleted nothing without the value).
- Spot Fleet and EC2 Fleet changes are in fleets.py.
"""
import base64
import re
import threading
import time

from moto.core.responses import ActionResult
from moto.ec2.models import EC2Backend
from moto.ecs.models import ContainerInstance, EC2ContainerServiceBackend, Task, ecs_backends
from moto.ecs.responses import EC2ContainerServiceResponse
from moto.moto_api import state_manager

# (vCPUs, memory MiB as registered by the ECS agent) of the types the tests use; others fall back.
TYPES = {
    "t3.micro": (2, 944),
    "t3.small": (2, 1924),
    "t3.medium": (2, 3907),
    "m5.large": (2, 7680),
    "m5.xlarge": (4, 15576),
    "m5.2xlarge": (8, 31630),
    "c5.large": (2, 3704),
    "c5.xlarge": (4, 7624),
    "r5.large": (2, 15739),
}
DEFAULT_TYPE = (2, 3800)

_lock = threading.RLock()


def _set_resources(ci, cpu, mem):
    for lst in (ci.registered_resources, ci.remaining_resources):
        for r in lst:
            if r["name"] == "CPU":
                r["integerValue"] = cpu
            elif r["name"] == "MEMORY":
                r["integerValue"] = mem


def _remaining(ci):
    vals = {r["name"]: r.get("integerValue", 0) for r in ci.remaining_resources}
    return vals.get("CPU", 0), vals.get("MEMORY", 0)


def _ci_init(self, ec2_instance_id, account_id, region_name, cluster_name, backend):
    _orig_ci_init(self, ec2_instance_id, account_id, region_name, cluster_name, backend)
    vcpus, mem = TYPES.get(self.attributes.get("ecs.instance-type"), DEFAULT_TYPE)
    _set_resources(self, 1024 * vcpus, mem)


def _register_container_instance(self):
    with _lock:  # the scheduler must not place a task before the resources are set
        return _register_locked(self)


def _register_locked(self):
    result = _orig_register_response(self)
    total = self._get_param("totalResources") or []
    given = {r.get("name"): r.get("integerValue") for r in total if r.get("integerValue") is not None}
    if "CPU" in given or "MEMORY" in given:
        ci = result.result["containerInstance"]
        cpu = given.get("CPU", _remaining(ci)[0])
        mem = given.get("MEMORY", _remaining(ci)[1])
        _set_resources(ci, int(cpu), int(mem))
    return result


# --- RunTask failures ----------------------------------------------------------------------------


def _shortage(backend, cluster_name, req):
    """The reason AWS gives for a task no ACTIVE instance holds, and the closest instance's id."""
    best, best_gap = None, None
    for cid, ci in backend.container_instances.get(cluster_name, {}).items():
        if ci.status != "ACTIVE":
            continue
        cpu, mem = _remaining(ci)
        gap = max(req["CPU"] - cpu, 0) / 1024 + max(req["MEMORY"] - mem, 0) / 1024
        if best_gap is None or gap < best_gap:
            best, best_gap = (cid, cpu, mem), gap
    if best is None:
        return "RESOURCE:MEMORY", None
    cid, cpu, mem = best
    return ("RESOURCE:CPU" if req["CPU"] > cpu else "RESOURCE:MEMORY"), cid


def _run_task_response(self):
    count = self._get_int_param("count", 1)
    cluster_str = self._get_param("cluster", "default")
    backend = self.ecs_backend
    cluster = backend._get_cluster(cluster_str)
    launch_type = self._get_param("launchType")
    if launch_type == "FARGATE" or not backend.container_instances.get(cluster.name):
        if launch_type != "FARGATE":
            td = backend.describe_task_definition(self._get_param("taskDefinition"))
            req = backend._calculate_task_resource_requirements(td)
            reason, _ = _shortage(backend, cluster.name, req)
            return ActionResult({"tasks": [], "failures": [{"arn": cluster.arn, "reason": reason} for _ in range(count)]})
        return _orig_run_task(self)
    with _lock:
        result = _orig_run_task(self)
    tasks = result.result["tasks"]
    failures = []
    if len(tasks) < count:
        td = backend.describe_task_definition(self._get_param("taskDefinition"))
        req = backend._calculate_task_resource_requirements(td)
        reason, cid = _shortage(backend, cluster.name, req)
        arn = next(
            (ci.container_instance_arn for k, ci in backend.container_instances[cluster.name].items() if k == cid),
            cluster.arn,
        )
        failures = [{"arn": arn, "reason": reason} for _ in range(count - len(tasks))]
    return ActionResult({"tasks": tasks, "failures": failures})


# --- services ------------------------------------------------------------------------------------


def _service_tasks(backend, service):
    group = f"service:{service.name}"
    return [
        t
        for t in backend.tasks.get(service.cluster_name, {}).values()
        if t.group == group and t.desired_status == "RUNNING"
    ]


def _instance_of(backend, cluster_name, task):
    if not task.container_instance_arn:
        return None
    return backend.container_instances.get(cluster_name, {}).get(task.container_instance_arn.split("/")[-1])


def _event(service, message):
    last = service.events[0]["message"] if service.events else None
    if last == message:
        return
    service.events.insert(
        0, {"id": str(time.time_ns()), "createdAt": time.time(), "message": message}
    )
    del service.events[100:]


def _stop(backend, cluster_name, task, reason):
    """Stop a task once (moto's stop_task would release its resources again on a second call); a task
    whose instance is gone has no resources to release."""
    if task.desired_status != "RUNNING":
        return
    if _instance_of(backend, cluster_name, task) is None:
        task.last_status = task.desired_status = "STOPPED"
        task.stopped_reason = reason
        return
    backend.stop_task(cluster_name, task.task_arn, reason)


def _place(backend, cluster, service, td, req, ci):
    task = Task(
        cluster,
        td,
        ci.container_instance_arn,
        req,
        backend=backend,
        group=f"service:{service.name}",
        started_by=f"ecs-svc/{service.name}",
        launch_type="EC2",
    )
    backend.update_container_instance_resources(ci, req)
    backend.update_cluster_resources(cluster, 1)
    backend.tasks.setdefault(cluster.name, {})[task.task_arn] = task
    start = _cluster_tag(cluster, START_TAG)
    if start:
        task.last_status = "PENDING"
        task._moto_started_at = time.time() + float(start)


START_TAG = "moto:task-start-seconds"


def _deployment(service):
    """(minimumHealthyPercent, maximumPercent) of a service; ECS's defaults for REPLICA services."""
    conf = getattr(service, "deployment_configuration", None) or {}
    return int(conf.get("minimumHealthyPercent", 100)), int(conf.get("maximumPercent", 200))


def _active_fitting(backend, cluster, req):
    return [
        ci
        for ci in backend.container_instances.get(cluster.name, {}).values()
        if ci.status == "ACTIVE" and backend._can_be_placed(ci, req)
    ]


def _replace_draining(backend, cluster, service, td, req, draining):
    """Start replacements within maximumPercent, then stop draining tasks while the running tasks
    stay at minimumHealthyPercent of the desired count."""
    low, high = _deployment(service)
    desired = service.desired_count
    running = len(_service_tasks(backend, service))
    healthy = running - len(draining)
    room = max(0, (desired * high) // 100 - running)
    for _ in range(min(len(draining), room, max(0, desired - healthy))):
        candidates = _active_fitting(backend, cluster, req)
        if not candidates:
            break
        _place(backend, cluster, service, td, req, min(candidates, key=lambda c: _remaining(c)[1]))
    running = len(_service_tasks(backend, service))
    floor = -(-desired * low // 100)  # ceil: ECS rounds the minimum up
    for t in draining[: max(0, running - floor)]:
        _stop(backend, service.cluster_name, t, "Service task on a draining container instance")


def _reconcile(backend, service):
    if service.status != "ACTIVE":
        # A deleted service's tasks stop, as in ECS.
        for t in _service_tasks(backend, service):
            _stop(backend, service.cluster_name, t, "Service deleted")
        return
    if not service.task_definition:
        return
    cluster = backend.clusters.get(service.cluster_name)
    if cluster is None:
        return
    td = backend.describe_task_definition(service.task_definition)
    req = backend._calculate_task_resource_requirements(td)
    running = _service_tasks(backend, service)
    daemon = service.scheduling_strategy == "DAEMON"
    # Tasks whose instance vanished are gone; DAEMON tasks on DRAINING instances stop at once.
    draining = []
    for t in running:
        ci = _instance_of(backend, service.cluster_name, t)
        if ci is None or (ci.status != "ACTIVE" and daemon):
            _stop(backend, service.cluster_name, t, "Service task on a draining container instance")
        elif ci.status != "ACTIVE":
            draining.append(t)
    if draining:
        _replace_draining(backend, cluster, service, td, req, draining)
    running = _service_tasks(backend, service)
    active = [ci for ci in backend.container_instances.get(cluster.name, {}).values() if ci.status == "ACTIVE"]
    if daemon:
        # One task on every ACTIVE instance: desiredCount follows the instances.
        service.desired_count = len(active)
    extra = len(running) - service.desired_count
    # Scale-in stops the tasks on DRAINING instances first.
    running.sort(key=lambda t: getattr(_instance_of(backend, service.cluster_name, t), "status", "") == "ACTIVE")
    for t in running[: max(extra, 0)]:
        _stop(backend, service.cluster_name, t, "Service scaled in")
    running = _service_tasks(backend, service)
    if daemon:
        have = {t.container_instance_arn for t in running}
        missing = len([ci for ci in active if ci.container_instance_arn not in have])
        placed = 0
        for ci in active:
            if ci.container_instance_arn not in have and backend._can_be_placed(ci, req):
                _place(backend, cluster, service, td, req, ci)
                placed += 1
    else:
        missing = service.desired_count - len(running)
        placed = 0
        for _ in range(max(missing, 0)):
            candidates = _active_fitting(backend, cluster, req)
            if not candidates:
                break
            _place(backend, cluster, service, td, req, min(candidates, key=lambda c: _remaining(c)[1]))  # binpack on memory
            placed += 1
    unplaced = max(missing, 0) - placed
    # As in AWS: placed tasks count as running, or pending while they start; tasks that could not be
    # placed are in neither count, so desired > running + pending shows them.
    placed_tasks = _service_tasks(backend, service)
    pending = len([t for t in placed_tasks if t.last_status == "PENDING"])
    lag = _cluster_tag(cluster, COUNTS_LAG_TAG)
    if lag:
        # The counters as they are now, shown once the lag has passed.
        service._moto_counts = getattr(service, "_moto_counts", []) + [(time.time() + float(lag), pending, len(placed_tasks) - pending)]
        _show_due_counts(service)
    else:
        _set_counts(service, pending, len(placed_tasks) - pending)
    if unplaced > 0:
        reason, cid = _shortage(backend, cluster.name, req)
        kind = "CPU units" if reason == "RESOURCE:CPU" else "memory"
        if cid is None:
            msg = (f"(service {service.name}) was unable to place a task because no container instance met all "
                   f"of its requirements. Reason: No Container Instances were found in your cluster. For more "
                   f"information, see the Troubleshooting section of the Amazon ECS Developer Guide.")
        else:
            msg = (f"(service {service.name}) was unable to place a task because no container instance met all "
                   f"of its requirements. The closest matching (container-instance {cid}) has insufficient {kind} "
                   f"available. For more information, see the Troubleshooting section of the Amazon ECS Developer Guide.")
        _event(service, msg)
    elif missing <= 0 and service.running_count == service.desired_count:
        _event(service, f"(service {service.name}) has reached a steady state.")


COUNTS_LAG_TAG = "moto:service-counts-lag-seconds"


def _set_counts(service, pending, running):
    service.pending_count, service.running_count = pending, running
    for d in service.deployments:
        d["runningCount"] = running
        d["pendingCount"] = pending
        d["desiredCount"] = service.desired_count


def _show_due_counts(service):
    """With COUNTS_LAG_TAG: the latest counters whose lag has passed."""
    now = time.time()
    queued = getattr(service, "_moto_counts", [])
    due = [c for c in queued if c[0] <= now]
    if due:
        _set_counts(service, due[-1][1], due[-1][2])
        service._moto_counts = [c for c in queued if c[0] > now]


def _reconcile_all():
    for account in list(ecs_backends.keys()):
        for region in list(ecs_backends[account].keys()):
            backend = ecs_backends[account][region]
            for service in list(backend.services.values()):
                try:
                    _reconcile(backend, service)
                except Exception as e:  # keep the scheduler alive
                    print(f"moto_ext.ecs: service {service.name}: {e}", flush=True)


def _advance_stopping():
    now = time.time()
    for account in list(ecs_backends.keys()):
        for region in list(ecs_backends[account].keys()):
            for tasks in ecs_backends[account][region].tasks.values():
                for t in tasks.values():
                    until = getattr(t, "_moto_stopped_at", None)
                    if until is not None and now >= until:
                        t.last_status = "STOPPED"
                        del t._moto_stopped_at
                    started = getattr(t, "_moto_started_at", None)
                    if started is not None and now >= started:
                        if t.last_status == "PENDING":
                            t.last_status = "RUNNING"
                        del t._moto_started_at


def _scheduler_loop():
    while True:
        time.sleep(1.0)
        with _lock:
            _advance_stopping()
            _reconcile_all()


def _wrap_service_call(orig):
    def wrapped(self, *args, **kwargs):
        with _lock:
            service = orig(self, *args, **kwargs)
            _reconcile(self, service)
            return service

    return wrapped


def _create_service_response(orig):
    """CreateService keeps its deploymentConfiguration (moto drops it; UpdateService sets it)."""

    def wrapped(self):
        result = orig(self)
        conf = self._get_param("deploymentConfiguration")
        if conf:
            service = self.ecs_backend._get_service(self._get_param("cluster", "default"), self._get_param("serviceName"))
            service.deployment_configuration = conf
        return result

    return wrapped


def _locked(orig):
    def wrapped(self, *args, **kwargs):
        with _lock:
            return orig(self, *args, **kwargs)

    return wrapped


# Every other change of tasks and instances takes the scheduler's lock too.


STOP_SECONDS_TAG = "moto:task-stop-seconds"


def _stop_seconds(cluster):
    return float(_cluster_tag(cluster, STOP_SECONDS_TAG) or 0)


def _stop_task(self, cluster_str, task_str, reason):
    with _lock:
        cluster = self._get_cluster(cluster_str)
        for arn, t in self.tasks.get(cluster.name, {}).items():
            if arn.endswith(task_str.split("/")[-1]) and t.desired_status != "RUNNING":
                return t  # already stopped: nothing to release twice
        task = _orig_stop_task(self, cluster_str, task_str, reason)
        seconds = _stop_seconds(cluster)
        if seconds > 0:
            task.last_status = "STOPPING"
            task._moto_stopped_at = time.time() + seconds
        return task


def _list_tasks(self, cluster_str=None, container_instance=None, family=None, started_by=None, service_name=None, desiredStatus=None):
    tasks = _orig_list_tasks(self, cluster_str, container_instance, family, started_by, None, desiredStatus)
    if service_name:
        tasks = [t for t in tasks if t.group == f"service:{service_name.split('/')[-1]}"]
    return tasks


from moto.ecs.exceptions import InvalidParameterException  # noqa: E402


def _update_container_instances_state(self):
    if len(self._get_param("containerInstances") or []) > 10:
        raise InvalidParameterException("containerInstances can have at most 10 items.")
    return _orig_update_states(self)


def _list_tasks_response(self):
    arns = _orig_list_tasks_response(self).result["taskArns"]
    size = min(self._get_int_param("maxResults") or 100, 100)
    start = int(self._get_param("nextToken") or 0)
    out = {"taskArns": arns[start:start + size]}
    if start + size < len(arns):
        out["nextToken"] = str(start + size)
    return ActionResult(out)


# --- instances register themselves from ECS_CLUSTER= in their user data; deregister at termination --


def _cluster_from_user_data(user_data):
    if not user_data:
        return None
    raw = user_data[0] if isinstance(user_data, list) else user_data
    if hasattr(raw, "_encoded_string"):  # moto's Base64EncodedString (launch configurations)
        raw = raw._encoded_string
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "replace")
    if not isinstance(raw, str):
        return None
    for text in (raw, _b64(raw)):
        m = re.search(r"ECS_CLUSTER=([A-Za-z0-9_-]+)", text or "")
        if m:
            return m.group(1)
    return None


def _b64(s):
    try:
        return base64.b64decode(s).decode("utf-8", "replace")
    except Exception:
        return ""


def _run_instances(self, *args, **kwargs):
    reservation = _orig_add_instances(self, *args, **kwargs)
    for inst in reservation.instances:
        name = _cluster_from_user_data(getattr(inst, "user_data", None))
        if not name:
            continue
        ecs = ecs_backends[self.account_id][self.region_name]
        if name not in ecs.clusters:
            continue
        delay = _cluster_tag(ecs.clusters[name], REGISTER_TAG)
        if delay:
            timer = threading.Timer(float(delay), _register_later, (ecs, name, inst))
            timer.daemon = True
            timer.start()
        else:
            with _lock:
                ecs.register_container_instance(name, inst.id)
    return reservation


REGISTER_TAG = "moto:register-seconds"


def _cluster_tag(cluster, key):
    for t in getattr(cluster, "tags", None) or []:
        if t.get("key") == key:
            return t.get("value")
    return None


def _register_later(ecs, name, inst):
    """The agent of a (still running) instance registers it."""
    with _lock:
        if inst.state == "running" and name in ecs.clusters:
            ecs.register_container_instance(name, inst.id)


def _terminate_instances(self, instance_ids):
    result = _orig_terminate(self, instance_ids)
    ecs = ecs_backends[self.account_id][self.region_name]
    with _lock:
        for cluster_name, cis in ecs.container_instances.items():
            for cid, ci in list(cis.items()):
                if ci.ec2_instance_id in instance_ids:
                    for t in list(ecs.tasks.get(cluster_name, {}).values()):
                        if t.container_instance_arn == ci.container_instance_arn and t.last_status != "STOPPED":
                            # Running or still stopping: cut short by the host's end, as in ECS.
                            _stop(ecs, cluster_name, t, "Host EC2 instance terminated")
                            t.last_status = "STOPPED"
                            t.stopped_reason = "Host EC2 instance terminated"
                            t.__dict__.pop("_moto_stopped_at", None)
                    del cis[cid]
                    ecs.clusters[cluster_name].registered_container_instances_count -= 1
    return result


def _short_target(orig):
    """Attribute calls: a full container-instance ARN as targetId is the instance's short ID."""

    def wrapped(self, cluster_name, name, value=None, target_id=None, target_type=None):
        if target_type is not None and target_id and "/" in target_id:
            target_id = target_id.rsplit("/", 1)[-1]
        if value is None and orig is _orig_delete_attribute and target_id:
            # Deleting by name: whatever value the attribute has.
            ci = self.container_instances.get(cluster_name, {}).get(target_id.rsplit("/", 1)[-1])
            if ci is not None and name in ci.attributes:
                value = ci.attributes[name]
        return orig(self, cluster_name, name, value, target_id, target_type)

    return wrapped


_orig_delete_attribute = None


def apply():
    """Patch moto: container instance resources, RunTask failures, the service scheduler (started
    here), task stops and pages, registration at launch and deregistration at termination."""
    global _orig_ci_init, _orig_register_response, _orig_run_task, _orig_stop_task, _orig_list_tasks, _orig_update_states, _orig_list_tasks_response, _orig_add_instances, _orig_terminate
    state_manager.set_transition(model_name="ecs::task", transition={"progression": "manual", "times": 10**9})
    EC2ContainerServiceBackend._put_attribute = _short_target(EC2ContainerServiceBackend._put_attribute)
    global _orig_delete_attribute
    _orig_delete_attribute = EC2ContainerServiceBackend._delete_attribute
    EC2ContainerServiceBackend._delete_attribute = _short_target(_orig_delete_attribute)
    _orig_ci_init = ContainerInstance.__init__
    ContainerInstance.__init__ = _ci_init
    _orig_register_response = EC2ContainerServiceResponse.register_container_instance
    EC2ContainerServiceResponse.register_container_instance = _register_container_instance
    _orig_run_task = EC2ContainerServiceResponse.run_task
    EC2ContainerServiceResponse.run_task = _run_task_response
    threading.Thread(target=_scheduler_loop, name="ecs-service-scheduler", daemon=True).start()
    EC2ContainerServiceBackend.create_service = _wrap_service_call(EC2ContainerServiceBackend.create_service)
    EC2ContainerServiceResponse.create_service = _create_service_response(EC2ContainerServiceResponse.create_service)
    EC2ContainerServiceBackend.update_service = _wrap_service_call(EC2ContainerServiceBackend.update_service)
    for _name in ("update_container_instances_state", "delete_service", "deregister_container_instance", "run_task", "start_task"):
        setattr(EC2ContainerServiceBackend, _name, _locked(getattr(EC2ContainerServiceBackend, _name)))
    _orig_stop_task = EC2ContainerServiceBackend.stop_task
    EC2ContainerServiceBackend.stop_task = _stop_task
    _orig_list_tasks = EC2ContainerServiceBackend.list_tasks
    EC2ContainerServiceBackend.list_tasks = _list_tasks
    _orig_update_states = EC2ContainerServiceResponse.update_container_instances_state
    EC2ContainerServiceResponse.update_container_instances_state = _update_container_instances_state
    _orig_list_tasks_response = EC2ContainerServiceResponse.list_tasks
    EC2ContainerServiceResponse.list_tasks = _list_tasks_response
    _orig_add_instances = EC2Backend.run_instances
    EC2Backend.run_instances = _run_instances
    # Termination, outer layer: EC2Backend.terminate_instances runs moto's (which calls
    # Instance.terminate per instance, eni.py's layer) and then deregisters the container instances.
    _orig_terminate = EC2Backend.terminate_instances
    EC2Backend.terminate_instances = _terminate_instances
