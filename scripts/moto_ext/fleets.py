"""Spot Fleet and EC2 Fleet as the EC2 API reference documents them (moto 5.2.5 differs on each point).

- ModifySpotFleetRequest: only an active request of type maintain can be modified; a cancelled one
  or one of type request answers FleetNotInModifiableState, as AWS does (moto kept no type and
  modified any). ExcessCapacityTerminationPolicy="default" terminates as AWS's does (moto compares
  with "Default").
- A weighted Spot Fleet launches as AWS does: enough instances of the cheapest specification to reach
  the target (weight 3, target 4: two instances, fulfilled 6), where moto launched one and counted 5.
- A maintain Spot Fleet replaces instances lost from outside (terminated, interrupted): about every
  second, an active maintain request whose fulfilled capacity is below its target launches the
  difference, as AWS's does (a target lowered with noTermination is not "lost": nothing launches).
- Latency (test control, switched per request): a Spot Fleet request or an EC2 Fleet tagged
  `moto:fleet-modifying-seconds=N` stays `modifying` for N seconds after each modification, as AWS's
  do while they apply a new target.
- ModifyFleet, which moto lacks: a maintain fleet's TotalTargetCapacity, launching or, with
  ExcessCapacityTerminationPolicy=termination, terminating the difference; a deleted fleet or one of
  type request or instant answers FleetNotInModifiableState.
"""
import math
import threading
import time

from moto.core.responses import ActionResult
from moto.ec2.exceptions import EC2ClientError
from moto.ec2.responses.fleets import Fleets
from moto.ec2.models import ec2_backends
from moto.ec2.models.spot_requests import SpotFleetRequest
from moto.ec2.responses.spot_fleets import SpotFleets

from .ecs import _lock  # a fleet's launches register container instances: one lock with the ECS scheduler


# --- Spot Fleet: ExcessCapacityTerminationPolicy as AWS spells it -----------------------------------
# AWS takes "default" and "noTermination"; moto compares with "Default", so a request that says
# "default" never terminated anything. (Lowering the target with noTermination keeps every instance.)


class _SpotFleetError(EC2ClientError):
    __module__ = "moto.ec2.exceptions"  # moto finds an error's service from the module name


def _not_modifiable(what, state, kind):
    return _SpotFleetError(
        "FleetNotInModifiableState",
        f"The {what} is {state} (type {kind}): only an active fleet of type maintain can be modified.",
    )


_orig_request_spot_fleet = None
MODIFYING_TAG = "moto:fleet-modifying-seconds"


def _request_spot_fleet(self):
    """Keep the request's Type (moto drops it): ModifySpotFleetRequest refuses type request."""
    kind = (self._get_param("SpotFleetRequestConfig") or {}).get("Type") or "maintain"
    before = set(self.ec2_backend.spot_fleet_requests)
    result = _orig_request_spot_fleet(self)
    for rid in set(self.ec2_backend.spot_fleet_requests) - before:
        self.ec2_backend.spot_fleet_requests[rid].fleet_type = kind
    return result


def _modify_spot_fleet_request(self):
    policy = self._get_param("ExcessCapacityTerminationPolicy", if_none="Default")
    request_id = self._get_param("SpotFleetRequestId")
    request = self.ec2_backend.spot_fleet_requests.get(request_id)
    if request is not None:
        kind = getattr(request, "fleet_type", "maintain")
        if request.state not in ("submitted", "active", "modifying") or kind != "maintain":
            raise _not_modifiable(f"Spot Fleet request {request_id}", request.state, kind)
    self.ec2_backend.modify_spot_fleet_request(
        self._get_param("SpotFleetRequestId"),
        self._get_int_param("TargetCapacity"),
        "Default" if policy in ("default", "Default") else policy,
    )
    seconds = (getattr(request, "tags", None) or {}).get("spot-fleet-request", {}).get(MODIFYING_TAG)
    if request is not None and seconds:
        _modifying_for(request, float(seconds))
    return ActionResult({"Return": True})


def _modifying_for(fleet, seconds):
    """The fleet reports `modifying` for `seconds`, then `active` again (unless changed meanwhile)."""
    fleet.state = "modifying"
    fleet._modifying = getattr(fleet, "_modifying", 0) + 1

    def settle(n=fleet._modifying):
        if fleet.state == "modifying" and fleet._modifying == n:
            fleet.state = "active"

    timer = threading.Timer(seconds, settle)
    timer.daemon = True
    timer.start()


# --- EC2 Fleet: ModifyFleet (moto 5.2.5 has CreateFleet and DescribeFleets, not ModifyFleet) --------


class _FleetError(EC2ClientError):
    __module__ = "moto.ec2.exceptions"  # moto finds an error's service from the module name


def _modify_fleet(self):
    fleet_id = self._get_param("FleetId")
    fleet = self.ec2_backend.get_fleet(fleet_id)
    if fleet is None:
        raise _FleetError("InvalidFleetId.NotFound", f"The fleet ID '{fleet_id}' does not exist")
    if fleet.fleet_type != "maintain" or fleet.state not in ("submitted", "active", "modifying"):
        raise _not_modifiable(f"EC2 Fleet {fleet_id}", fleet.state, fleet.fleet_type)
    spec = self._get_param("TargetCapacitySpecification") or {}
    policy = self._get_param("ExcessCapacityTerminationPolicy") or fleet.excess_capacity_termination_policy
    with _lock:
        if "TotalTargetCapacity" in spec:
            total = int(spec["TotalTargetCapacity"])
            fleet.target_capacity = total
            fleet.target_capacity_specification["TotalTargetCapacity"] = total
            delta = total - fleet.fulfilled_capacity
            default = fleet.target_capacity_specification.get("DefaultTargetCapacityType") or "on-demand"
            if delta > 0:
                if default == "spot":
                    fleet.create_spot_requests(delta)
                else:
                    fleet.create_on_demand_requests(delta)
            elif delta < 0 and policy == "termination":
                fleet.terminate_instances()
    seconds = self.ec2_backend.tags.get(fleet_id, {}).get(MODIFYING_TAG)
    if seconds:
        _modifying_for(fleet, float(seconds))
    return ActionResult({"Return": True})


# --- Spot Fleet: weighted launches and maintenance -------------------------------------------------

_orig_counts = None


def _launch_spec_counts(self, weight_to_add):
    """lowestPrice: whole instances of the cheapest specification until the weight is reached."""
    if self.allocation_strategy == "diversified":
        return _orig_counts(self, weight_to_add)
    cheapest = sorted(self.launch_specs, key=lambda spec: float(spec.spot_price or "+inf"))[0]
    weight = float(cheapest.weighted_capacity or 1)
    count = max(0, math.ceil(weight_to_add / weight - 1e-9))
    return {cheapest: count}, count * weight


def _maintain_loop():
    while True:
        time.sleep(1.0)
        with _lock:
            for account in list(ec2_backends.keys()):
                for region in list(ec2_backends[account].keys()):
                    backend = ec2_backends[account][region]
                    for request in list(backend.spot_fleet_requests.values()):
                        try:
                            if getattr(request, "fleet_type", "maintain") != "maintain" or request.state != "active":
                                continue
                            missing = request.target_capacity - request.fulfilled_capacity
                            if missing > 0:
                                request.create_spot_requests(missing)
                        except Exception as e:  # keep the loop alive whatever one request's state is
                            print(f"moto_ext.fleets: maintaining {request.id}: {e}", flush=True)


def apply():
    """Patch moto: RequestSpotFleet (its type kept), weighted launches, the maintain loop (started
    here), ModifySpotFleetRequest and ModifyFleet."""
    global _orig_counts, _orig_request_spot_fleet
    _orig_counts = SpotFleetRequest.get_launch_spec_counts
    SpotFleetRequest.get_launch_spec_counts = _launch_spec_counts
    threading.Thread(target=_maintain_loop, name="spot-fleet-maintain", daemon=True).start()
    _orig_request_spot_fleet = SpotFleets.request_spot_fleet
    SpotFleets.request_spot_fleet = _request_spot_fleet
    SpotFleets.modify_spot_fleet_request = _modify_spot_fleet_request
    Fleets.modify_fleet = _modify_fleet
