"""Auto Scaling lifecycle hooks as the EC2 Auto Scaling user guide documents them.

moto 5.2.5 stores a hook's name, transition, timeout and default result only; it never sends a
notification, never holds an instance in a wait state, and does not implement CompleteLifecycleAction
or RecordLifecycleActionHeartbeat. This module adds:

- PutLifecycleHook keeps NotificationTargetARN, RoleARN and NotificationMetadata, validates
  HeartbeatTimeout (30..7200 s) and DefaultResult, and sends `autoscaling:TEST_NOTIFICATION` to an SQS
  target (which must exist).
- Launch: an instance launched by a group with launch hooks enters `Pending:Wait` and each hook's queue
  gets a notification (the direct-to-SQS body AWS sends) with its own token. CONTINUE of every hook
  moves it to `InService`; ABANDON of any ends its other actions and
  terminates it, and the group launches a replacement. With no completion before the heartbeat
  timeout (or the global timeout, min(48 h, 100 x HeartbeatTimeout)) the DefaultResult applies. Each
  RecordLifecycleActionHeartbeat restarts the heartbeat timer.
- Terminate: an instance a group scales in, with a terminate hook, enters `Terminating:Wait` and the
  hook's queue is notified; either result (or the timeout) terminates it.
- TerminateInstanceInAutoScalingGroup is a termination like a scale-in's: with a terminate hook the
  instance enters `Terminating:Wait` and the hook is notified (moto terminated it at once); with
  ShouldDecrementDesiredCapacity=false the group launches a replacement meanwhile.
- Warm pools with InstanceReusePolicy ReuseOnScaleIn: a scale-in returns the instance to the pool
  (the terminate action's Destination is `WarmPool`; on completion the instance is stopped, kept and
  listed by DescribeWarmPool as `Warmed:Stopped`), and a scale-out takes pooled instances first (they
  start, and the launch action's Origin is `WarmPool`). Launching new instances into the pool is not
  modelled.
- DeleteLifecycleHook completes the hook's outstanding actions first: ABANDON for launching
  instances, CONTINUE for terminating ones, as AWS documents (moto left them waiting).
- Complete and heartbeat take the LifecycleActionToken or the InstanceId; with neither active they fail
  with ValidationError "No active Lifecycle Action found with token …" (or "… instance ID …").
- A group's instances are spread over the subnets of its VPCZoneIdentifier, each in its subnet's zone
  (moto launches them all in the first subnet with a random zone).

Test control, not an AWS feature: a group tagged `moto:time-scale=S` (0 < S <= 1) runs its hooks' clocks
S times as long: a hook put with HeartbeatTimeout=30 on such a group is stored, described and enforced as
30*S seconds, so tests exercise heartbeats and timeouts in seconds while clients read the timeout they
must honour from DescribeLifecycleHooks, as they do against AWS.

Fault switches, not AWS features: a group tagged `moto:heartbeat-error=CODE` answers every
RecordLifecycleActionHeartbeat for it with that error code, and one tagged `moto:complete-error=CODE`
every CompleteLifecycleAction (`AccessDenied` with AWS's wording for a
caller lacking the permission; `Throttling`, or any other code, with a generic message), as AWS
answers a consumer whose role lost the permission or that exceeds the API's rate.
"""
import json
import threading
import time
import uuid
from datetime import datetime, timezone

from moto.autoscaling.exceptions import AutoscalingClientError, ValidationError
from moto.autoscaling.models import AutoScalingBackend, FakeAutoScalingGroup, LifecycleHook, TerminateInstanceActivity
from moto.autoscaling.responses import AutoScalingResponse
from moto.core.responses import EmptyResult
from moto.sqs.models import sqs_backends

LAUNCHING = "autoscaling:EC2_INSTANCE_LAUNCHING"
TERMINATING = "autoscaling:EC2_INSTANCE_TERMINATING"
SCALE_TAG = "moto:time-scale"

_lock = threading.RLock()
# token -> Action, across every account and region of this server.
_actions = {}


class Action:
    def __init__(self, backend, group, hook, state, transition, origin=None, destination=None):
        self.token = str(uuid.uuid4())
        launching = transition == LAUNCHING
        self.origin = origin or ("EC2" if launching else "AutoScalingGroup")
        self.destination = destination or ("AutoScalingGroup" if launching else "EC2")
        self.backend = backend
        self.group = group
        self.hook = hook
        self.state = state  # the InstanceState in the group
        self.transition = transition
        now = time.time()
        self.heartbeat_deadline = now + hook.heartbeat_timeout
        self.global_deadline = now + hook.global_timeout

    @property
    def instance_id(self):
        return self.state.instance.id


def _now_iso():
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _scale(group):
    for tag in group.tags:
        if tag.get("Key") == SCALE_TAG:
            scale = float(tag["Value"])
            if not 0 < scale <= 1:
                raise ValidationError(f"{SCALE_TAG} must be in (0, 1]")
            return scale
    return 1.0


def _queue(backend, arn):
    """The SQS backend and queue name of a target ARN, or None when it is not an existing queue."""
    parts = (arn or "").split(":")
    if len(parts) != 6 or parts[2] != "sqs":
        return None
    region, account, name = parts[3], parts[4], parts[5]
    sqs = sqs_backends[account][region]
    return (sqs, name) if name in sqs.queues else None


def _send(backend, hook, body):
    target = _queue(backend, hook.notification_target_arn)
    if target is None:
        return
    sqs, name = target
    sqs.send_message(name, json.dumps(body))


def _hooks(backend, group, transition):
    return [
        h
        for h in backend.lifecycle_hooks.values()
        if h.auto_scaling_group_name == group.name and h.lifecycle_transition == transition
    ]


def _start(backend, group, state, transition, origin=None, destination=None):
    """Put `state` into the wait state, with one action (and one notification) per hook of the
    transition, as AWS does; False when the group has no such hook."""
    hooks = _hooks(backend, group, transition)
    if not hooks:
        return False
    state.lifecycle_state = "Pending:Wait" if transition == LAUNCHING else "Terminating:Wait"
    for hook in hooks:
        _notify_action(backend, group, hook, state, transition, origin, destination)
    return True


def _notify_action(backend, group, hook, state, transition, origin=None, destination=None):
    action = Action(backend, group, hook, state, transition, origin, destination)
    with _lock:
        _actions[action.token] = action
    body = {
        "Origin": action.origin,
        "Destination": action.destination,
        "Service": "AWS Auto Scaling",
        "Time": _now_iso(),
        "AccountId": backend.account_id,
        "LifecycleTransition": transition,
        "RequestId": str(uuid.uuid4()),
        "LifecycleActionToken": action.token,
        "EC2InstanceId": action.instance_id,
        "LifecycleHookName": hook.name,
        "AutoScalingGroupName": group.name,
    }
    if hook.notification_metadata is not None:
        body["NotificationMetadata"] = hook.notification_metadata
    _send(backend, hook, body)


def _finish(action, result):
    """Apply a completed action's result (CONTINUE or ABANDON). Callers hold `_lock` and have removed
    the action from `_actions`."""
    group, state, backend = action.group, action.state, action.backend
    others = [a for a in _actions.values() if a.state is state and a.transition == action.transition]
    if result == "CONTINUE" and others:
        return  # the instance waits for its other hooks
    for a in others:  # ABANDON ends the instance's other actions too
        del _actions[a.token]
    if action.transition == LAUNCHING and result == "CONTINUE":
        state.lifecycle_state = "InService"
        return
    if action.destination == "WarmPool":
        _to_pool(backend, group, state)
        return
    # ABANDON on launch, or either result on terminate: the instance goes.
    group.instance_states = [s for s in group.instance_states if s is not state]
    try:
        backend.ec2_backend.terminate_instances([action.instance_id])
    except Exception:  # already gone
        pass
    if action.transition == LAUNCHING:
        # The group still wants its desired capacity: it launches a replacement, as AWS does.
        group.set_desired_capacity(group.desired_capacity)


# --- warm pools: reuse on scale-in ----------------------------------------------------------------


def _reuses(group):
    pool = getattr(group, "warm_pool", None)
    return pool is not None and bool((pool.instance_reuse_policy or {}).get("ReuseOnScaleIn"))


def _to_pool(backend, group, state):
    """The instance leaves the group, stopped, into its warm pool."""
    group.instance_states = [s for s in group.instance_states if s is not state]
    backend.ec2_backend.stop_instances([state.instance.id])
    state.lifecycle_state = "Warmed:Stopped"
    group.__dict__.setdefault("_pooled", []).append(state)


def _from_pool(backend, group, count):
    """Up to `count` pooled instances start and join the group (launch hooks with Origin WarmPool).
    Returns how many."""
    pooled = group.__dict__.setdefault("_pooled", [])
    taken = 0
    while pooled and taken < count:
        state = pooled.pop(0)
        backend.ec2_backend.start_instances([state.instance.id])
        group.instance_states.append(state)
        state.lifecycle_state = "Pending"
        if not _start(backend, group, state, LAUNCHING, origin="WarmPool", destination="AutoScalingGroup"):
            state.lifecycle_state = "InService"
        taken += 1
    return taken


_orig_describe_warm_pool = None


def _describe_warm_pool(self):
    result = _orig_describe_warm_pool(self)
    group = self.autoscaling_backend.autoscaling_groups.get(self._get_param("AutoScalingGroupName"))
    if group is not None:
        result.result["Instances"] = [
            {"InstanceId": s.instance.id, "InstanceType": s.instance.instance_type,
             "AvailabilityZone": s.instance._placement.zone, "LifecycleState": s.lifecycle_state,
             "LaunchConfigurationName": getattr(group.launch_config, "name", "") if group.launch_config else ""}
            for s in group.__dict__.get("_pooled", [])
        ]
    return result


def _find(backend, group_name, hook_name, token, instance_id):
    with _lock:
        for action in _actions.values():
            if action.backend is not backend or action.group.name != group_name or action.hook.name != hook_name:
                continue
            if (token and action.token == token) or (not token and instance_id and action.instance_id == instance_id):
                return action
    if token:
        raise ValidationError(f"No active Lifecycle Action found with token {token}")
    raise ValidationError(f"No active Lifecycle Action found with instance ID {instance_id}")


def _expire_loop():
    while True:
        time.sleep(0.1)
        now = time.time()
        with _lock:
            expired = [a for a in _actions.values() if now >= min(a.heartbeat_deadline, a.global_deadline)]
            for a in expired:
                if _actions.pop(a.token, None) is None:
                    continue  # ended with another of its instance's actions
                try:
                    _finish(a, a.hook.default_result)
                except Exception as e:  # keep the timer alive whatever one group's state is
                    print(f"moto_ext.lifecycle: applying the default result to {a.instance_id}: {e}", flush=True)


# --- the hook model and PutLifecycleHook --------------------------------------------------------


def _hook_init(self, name, as_name, transition, timeout, result, target=None, role=None, metadata=None):
    _orig_hook_init(self, name, as_name, transition, timeout, result)
    self.notification_target_arn = target
    self.role_arn = role
    self.notification_metadata = metadata


def _put_lifecycle_hook(self):
    backend = self.autoscaling_backend
    group_name = self._get_param("AutoScalingGroupName")
    name = self._get_param("LifecycleHookName")
    groups = backend.autoscaling_groups
    if group_name not in groups:
        raise ValidationError(f"Group {group_name} not found")
    group = groups[group_name]
    existing = backend.lifecycle_hooks.get(f"{group_name}_{name}")
    transition = self._get_param("LifecycleTransition") or (existing and existing.lifecycle_transition)
    if transition not in (LAUNCHING, TERMINATING):
        raise ValidationError(f"LifecycleTransition must be {LAUNCHING} or {TERMINATING}")
    timeout = self._get_int_param("HeartbeatTimeout")
    if timeout is None:
        timeout = round(existing.heartbeat_timeout / _scale(group)) if existing else 3600
    if not 30 <= timeout <= 7200:
        raise ValidationError("HeartbeatTimeout must be between 30 and 7200 seconds")
    result = self._get_param("DefaultResult") or (existing and existing.default_result) or "ABANDON"
    if result not in ("CONTINUE", "ABANDON"):
        raise ValidationError("DefaultResult must be CONTINUE or ABANDON")
    target = self._get_param("NotificationTargetARN") or (existing and existing.notification_target_arn)
    if target and _queue(backend, target) is None and ":sqs:" in target:
        raise ValidationError(f"Unable to publish test message to notification target {target}")
    hook = LifecycleHook(
        name,
        group_name,
        transition,
        max(1, round(timeout * _scale(group))),
        result,
        target=target,
        role=self._get_param("RoleARN") or (existing and existing.role_arn),
        metadata=self._get_param("NotificationMetadata") or (existing and existing.notification_metadata),
    )
    hook.global_timeout = max(1, round(min(172800, 100 * timeout) * _scale(group)))
    backend.lifecycle_hooks[f"{group_name}_{name}"] = hook
    if target:
        _send(
            backend,
            hook,
            {
                "AccountId": backend.account_id,
                "RequestId": str(uuid.uuid4()),
                "AutoScalingGroupARN": group.arn,
                "AutoScalingGroupName": group_name,
                "Service": "AWS Auto Scaling",
                "Event": "autoscaling:TEST_NOTIFICATION",
                "Time": _now_iso(),
            },
        )
    return EmptyResult()


def _requested_action(response):
    """The active action a Complete or Heartbeat request names (by token or instance id)."""
    return _find(
        response.autoscaling_backend,
        response._get_param("AutoScalingGroupName"),
        response._get_param("LifecycleHookName"),
        response._get_param("LifecycleActionToken"),
        response._get_param("InstanceId"),
    )


def _complete_lifecycle_action(self):
    _fault(self, COMPLETE_ERROR_TAG, "CompleteLifecycleAction")
    result = self._get_param("LifecycleActionResult")
    if result not in ("CONTINUE", "ABANDON"):
        raise ValidationError("LifecycleActionResult must be CONTINUE or ABANDON")
    action = _requested_action(self)
    with _lock:
        if _actions.pop(action.token, None) is None:
            raise ValidationError(f"No active Lifecycle Action found with token {action.token}")
        _finish(action, result)
    return EmptyResult()


HEARTBEAT_ERROR_TAG = "moto:heartbeat-error"
COMPLETE_ERROR_TAG = "moto:complete-error"


def _fault(response, tag, operation):
    name = response._get_param("AutoScalingGroupName")
    group = response.autoscaling_backend.autoscaling_groups.get(name)
    code = next((t["Value"] for t in (group.tags if group else []) if t.get("Key") == tag), None)
    if code == "AccessDenied":
        raise AutoscalingClientError(
            code, "User: arn:aws:sts::123456789012:assumed-role/opsd/i-0 is not authorized to perform: "
                  f"autoscaling:{operation} on resource: {name}")
    if code:
        raise AutoscalingClientError(code, f"Rate exceeded ({tag})" if code == "Throttling" else code)


def _record_lifecycle_action_heartbeat(self):
    _fault(self, HEARTBEAT_ERROR_TAG, "RecordLifecycleActionHeartbeat")
    action = _requested_action(self)
    with _lock:
        action.heartbeat_deadline = time.time() + action.hook.heartbeat_timeout
    return EmptyResult()


# --- the group: launches spread over subnets, wait states, hooks on scale-out and scale-in --------


def _replace_instances(self, count_needed, propagated_tags):
    backend = self.autoscaling_backend
    count_needed -= _from_pool(backend, self, count_needed)
    if count_needed <= 0:
        return
    subnets = self.vpc_zone_identifier.split(",") if self.vpc_zone_identifier else []
    before = set(id(s) for s in self.instance_states)
    if len(subnets) <= 1:
        _orig_replace(self, count_needed, propagated_tags)
    else:
        saved = (self.vpc_zone_identifier, self.availability_zones)
        try:
            for _ in range(count_needed):
                # Balance across zones, as AWS does: the subnet with the fewest of the group's instances.
                counts = {s: 0 for s in subnets}
                for st in self.instance_states:
                    if st.instance.subnet_id in counts:
                        counts[st.instance.subnet_id] += 1
                subnet_id = min(subnets, key=lambda s: (counts[s], subnets.index(s)))
                subnet = backend.ec2_backend.get_subnet(subnet_id)
                self.vpc_zone_identifier = subnet_id
                self.availability_zones = [subnet.availability_zone]
                _orig_replace(self, 1, dict(propagated_tags))
        finally:
            self.vpc_zone_identifier, self.availability_zones = saved
    for state in [s for s in self.instance_states if id(s) not in before]:
        _start(backend, self, state, LAUNCHING)


COUNTED = ("InService", "Pending", "Pending:Wait", "Pending:Proceed")


def _active_instances(self):
    # Instances still launching count toward the desired capacity; instances terminating do not.
    return [s for s in self.instance_states if s.lifecycle_state in COUNTED]


def _set_desired_capacity(self, new_capacity):
    with _lock:  # one change of a group's instances at a time (request threads and the timer)
        _set_desired_capacity_locked(self, new_capacity)


def _set_desired_capacity_locked(self, new_capacity):
    backend = self.autoscaling_backend
    target = self.min_size if new_capacity is None else new_capacity
    active = self.active_instances()
    excess = len(active) - (target or 0)
    if excess > 0 and (_hooks(backend, self, TERMINATING) or _reuses(self)):
        self.desired_capacity = target
        # Instances still waiting on a launch hook go first, then the oldest in service (unprotected).
        victims = [s for s in active if s.lifecycle_state != "InService"]
        victims += [s for s in active if s.lifecycle_state == "InService" and not s.protected_from_scale_in]
        for state in victims[:excess]:
            if state.lifecycle_state == "Pending:Wait":
                pending = [a for a in _actions.values() if a.state is state]
                for a in pending:
                    del _actions[a.token]
            if _reuses(self):
                if not _start(backend, self, state, TERMINATING, destination="WarmPool"):
                    _to_pool(backend, self, state)
            else:
                _start(backend, self, state, TERMINATING)
        return
    _orig_set_desired(self, new_capacity)


def _terminate_instance(self, instance_id, should_decrement):
    """TerminateInstanceInAutoScalingGroup through the group's terminate hooks."""
    with _lock:
        state = next(
            (s for g in self.autoscaling_groups.values() for s in g.instance_states if s.instance.id == instance_id),
            None,
        )
        if state is None or state.lifecycle_state.startswith("Terminating"):
            return _orig_terminate_instance(self, instance_id, should_decrement)
        group = state.instance.autoscaling_group
        if not _hooks(self, group, TERMINATING):
            return _orig_terminate_instance(self, instance_id, should_decrement)
        original = group.desired_capacity
        for a in [a for a in _actions.values() if a.state is state]:
            del _actions[a.token]  # its launch actions end with it
        _start(self, group, state, TERMINATING)
        if should_decrement:
            group.desired_capacity = original - 1
        else:
            # It no longer counts toward the desired capacity: the group replaces it.
            group.set_desired_capacity(original)
        return TerminateInstanceActivity(state.instance, original)


def _delete_lifecycle_hook(self, as_name, name):
    """Delete the hook and complete its outstanding actions (ABANDON launching, CONTINUE terminating;
    the hook goes first, so a replacement launched for an abandoned instance does not wait on it)."""
    with _lock:
        pending = [a for a in _actions.values() if a.group.name == as_name and a.hook.name == name and a.backend is self]
        result = _orig_delete_hook(self, as_name, name)
        for a in pending:
            if _actions.pop(a.token, None) is not None:
                _finish(a, "ABANDON" if a.transition == LAUNCHING else "CONTINUE")
    return result


def apply():
    """Patch moto: lifecycle hooks, actions and their timeouts (the timer starts here), and the
    group's wait states."""
    global _orig_hook_init, _orig_replace, _orig_set_desired, _orig_terminate_instance, _orig_delete_hook, _orig_describe_warm_pool
    _orig_describe_warm_pool = AutoScalingResponse.describe_warm_pool
    AutoScalingResponse.describe_warm_pool = _describe_warm_pool
    _orig_terminate_instance = AutoScalingBackend.terminate_instance
    AutoScalingBackend.terminate_instance = _terminate_instance
    _orig_delete_hook = AutoScalingBackend.delete_lifecycle_hook
    AutoScalingBackend.delete_lifecycle_hook = _delete_lifecycle_hook
    threading.Thread(target=_expire_loop, name="lifecycle-timeouts", daemon=True).start()
    _orig_hook_init = LifecycleHook.__init__
    LifecycleHook.__init__ = _hook_init
    AutoScalingResponse.put_lifecycle_hook = _put_lifecycle_hook
    AutoScalingResponse.complete_lifecycle_action = _complete_lifecycle_action
    AutoScalingResponse.record_lifecycle_action_heartbeat = _record_lifecycle_action_heartbeat
    _orig_replace = FakeAutoScalingGroup.replace_autoscaling_group_instances
    FakeAutoScalingGroup.replace_autoscaling_group_instances = _replace_instances
    FakeAutoScalingGroup.active_instances = _active_instances
    _orig_set_desired = FakeAutoScalingGroup.set_desired_capacity
    FakeAutoScalingGroup.set_desired_capacity = _set_desired_capacity
