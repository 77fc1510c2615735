"""Spot Fleet and EC2 Fleet as the EC2 API reference documents them (moto 5.2.5 differs on each point).

- ModifySpotFleetRequest: a request that is not active (cancelled_*) cannot be modified (AWS: only
  an active request of type maintain can be), and ExcessCapacityTerminationPolicy="default"
  terminates as AWS's does (moto compares with "Default").
- ModifyFleet, which moto lacks: a maintain fleet's TotalTargetCapacity, launching or, with
  ExcessCapacityTerminationPolicy=termination, terminating the difference.
"""
from moto.core.responses import ActionResult
from moto.ec2.exceptions import EC2ClientError
from moto.ec2.responses.fleets import Fleets
from moto.ec2.responses.spot_fleets import SpotFleets

from .ecs import _lock  # a fleet's launches register container instances: one lock with the ECS scheduler


# --- Spot Fleet: ExcessCapacityTerminationPolicy as AWS spells it -----------------------------------
# AWS takes "default" and "noTermination"; moto compares with "Default", so a request that says
# "default" never terminated anything. (Lowering the target with noTermination keeps every instance.)


class _SpotFleetError(EC2ClientError):
    __module__ = "moto.ec2.exceptions"  # moto finds an error's service from the module name


def _modify_spot_fleet_request(self):
    policy = self._get_param("ExcessCapacityTerminationPolicy", if_none="Default")
    request_id = self._get_param("SpotFleetRequestId")
    request = self.ec2_backend.spot_fleet_requests.get(request_id)
    if request is not None and request.state not in ("submitted", "active", "modifying"):
        raise _SpotFleetError(
            "IncorrectState", f"The Spot Fleet request {request_id} is {request.state} and cannot be modified."
        )
    self.ec2_backend.modify_spot_fleet_request(
        self._get_param("SpotFleetRequestId"),
        self._get_int_param("TargetCapacity"),
        "Default" if policy in ("default", "Default") else policy,
    )
    return ActionResult({"Return": True})


# --- EC2 Fleet: ModifyFleet (moto 5.2.5 has CreateFleet and DescribeFleets, not ModifyFleet) --------


class _FleetError(EC2ClientError):
    __module__ = "moto.ec2.exceptions"  # moto finds an error's service from the module name


def _modify_fleet(self):
    fleet_id = self._get_param("FleetId")
    fleet = self.ec2_backend.get_fleet(fleet_id)
    if fleet is None:
        raise _FleetError("InvalidFleetId.NotFound", f"The fleet ID '{fleet_id}' does not exist")
    if fleet.fleet_type != "maintain":
        raise _FleetError("UnsupportedOperation", "You can only modify an EC2 Fleet of type maintain.")
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
    return ActionResult({"Return": True})


def apply():
    """Patch moto: ModifySpotFleetRequest and ModifyFleet."""
    SpotFleets.modify_spot_fleet_request = _modify_spot_fleet_request
    Fleets.modify_fleet = _modify_fleet
