"""Elastic network interfaces as AWS documents them (moto 5.2.5 differs on each point below).

- CreateNetworkInterface honours ClientToken: a retry with the same token returns the interface the
  first call created instead of a second one (EC2 idempotency, "Ensuring idempotency" in the EC2 API
  reference). A token reused with a different subnet is IdempotentParameterMismatch.
- A new interface's primary address is the lowest free address of its subnet (AWS never hands out an
  address in use; moto picks a random one, which collides).
- A ClientToken reused after its interface was deleted returns the original (deleted) interface, as
  AWS's idempotency does, not a new one.
- AttachNetworkInterface refuses a device index already in use on the instance, an interface that
  is already attached, an interface in another zone than the instance (InvalidParameterCombination),
  one interface more than the instance type allows (AttachmentLimitExceeded) and a terminated or
  shutting-down instance (IncorrectInstanceState); DeleteNetworkInterface refuses an attached
  interface (InvalidNetworkInterface.InUse).
- When an instance terminates, interfaces attached to it without DeleteOnTermination are detached and
  become `available`, as in AWS (moto leaves them attached to the dead instance).
- Test control, not an AWS feature: interfaces created in a subnet tagged `moto:eni-pending-seconds=N`
  report status `pending` for N seconds, so a client's wait for `available` is really exercised.
- Instances launched in a subnet tagged `moto:instance-pending-seconds=N` (test control) stay `pending`
  for N seconds before `running`, as EC2's do for tens of seconds; an interface cannot be attached to
  a pending instance (IncorrectInstanceState), as in AWS.
- Latency as AWS has it, switched per subnet (test control): `moto:eni-attach-seconds=N` keeps a new
  attachment `attaching` for N seconds before `attached`; `moto:eni-detach-seconds=N` keeps a detached
  interface `in-use` with its attachment `detaching` for N seconds before it becomes `available`.
"""
import ipaddress
import threading
import time

from moto.ec2.exceptions import EC2ClientError
from moto.ec2.models.elastic_network_interfaces import Attachment as _Attachment
from moto.ec2.models.elastic_network_interfaces import NetworkInterface, NetworkInterfaceBackend
from moto.ec2.models.instances import Instance, InstanceState
from moto.ec2.responses.elastic_network_interfaces import ElasticNetworkInterfaces

PENDING_TAG = "moto:eni-pending-seconds"
ATTACH_TAG = "moto:eni-attach-seconds"
INSTANCE_PENDING_TAG = "moto:instance-pending-seconds"
DETACH_TAG = "moto:eni-detach-seconds"


def _subnet_seconds(eni, tag):
    value = eni.ec2_backend.tags.get(eni.subnet.id, {}).get(tag)
    return float(value) if value else 0.0


# moto finds an error's service from the exception's module name: these are EC2's.
class InvalidParameterValue(EC2ClientError):
    __module__ = "moto.ec2.exceptions"

    def __init__(self, message):
        super().__init__("InvalidParameterValue", message)


class InUse(EC2ClientError):
    __module__ = "moto.ec2.exceptions"

    def __init__(self, message):
        super().__init__("InvalidNetworkInterface.InUse", message)


class _Refused(EC2ClientError):
    __module__ = "moto.ec2.exceptions"


# Network interfaces per instance type ("Maximum IP addresses per network interface per instance
# type" in the EC2 user guide), for the types the tests use; others get 3.
MAX_INTERFACES = {"t3.micro": 2, "t3.small": 3, "t3.medium": 3, "m5.large": 3, "m5.xlarge": 4,
                  "m5.2xlarge": 4, "c5.large": 3, "c5.xlarge": 4, "r5.large": 3}


class IdempotentParameterMismatch(EC2ClientError):
    __module__ = "moto.ec2.exceptions"

    def __init__(self, token):
        super().__init__(
            "IdempotentParameterMismatch",
            f"Client token {token} was already used with different parameters.",
        )


# --- status: `pending` for a while in tagged subnets ---------------------------------------------


def _get_status(self):
    until = getattr(self, "_pending_until", None)
    status = self.__dict__.get("_status", "available")
    if until is not None and status == "available" and time.time() < until:
        return "pending"
    return status


def _set_status(self, value):
    self.__dict__["_status"] = value


def _get_filter_value(self, filter_name, method_name=None):
    if filter_name == "status":
        return self.status
    if filter_name == "attachment.device-index":
        return str(self.device_index) if self.instance else None
    return _orig_get_filter_value(self, filter_name, method_name)


# --- creation: idempotency and free addresses ---------------------------------------------------


def _lowest_free_address(backend, subnet):
    used = {eni.private_ip_address for eni in backend.enis.values() if eni.subnet.id == subnet.id}
    for reservation in backend.reservations.values():
        for inst in reservation.instances:
            used.add(inst.private_ip)
            for nic in inst.nics.values():
                used.add(nic.private_ip_address)
    net = ipaddress.ip_network(subnet.cidr_block, strict=False)
    # AWS reserves the first four addresses and the last one of every subnet.
    for host in list(net.hosts())[3:-1]:
        if str(host) not in used:
            return str(host)
    raise InvalidParameterValue(f"The subnet '{subnet.id}' has no free addresses.")


def _create_network_interface(self, subnet, private_ip_address, *args, **kwargs):
    if isinstance(subnet, str):
        subnet = self.get_subnet(subnet)
    if not private_ip_address and not (args and args[0]):
        private_ip_address = _lowest_free_address(self, subnet)
    eni = _orig_create(self, subnet, private_ip_address, *args, **kwargs)
    pending = self.tags.get(subnet.id, {}).get(PENDING_TAG)
    if pending:
        eni._pending_until = time.time() + float(pending)
    return eni


# The check and the create are one step: concurrent retries with one token make one interface.
_token_lock = threading.Lock()


def _create_network_interface_response(self):
    token = self._get_param("ClientToken")
    if not token:
        return _orig_create_response(self)
    with _token_lock:
        return _create_with_token(self, token)


def _create_with_token(self, token):
    tokens = self.ec2_backend.__dict__.setdefault("_eni_client_tokens", {})
    known = tokens.get(token)
    if known is not None:
        eni, subnet_id = known
        if subnet_id != self._get_param("SubnetId"):
            raise IdempotentParameterMismatch(token)
        # The first call's result, even when that interface has been deleted since.
        from moto.core.responses import ActionResult

        return ActionResult({"NetworkInterface": eni, "ClientToken": token})
    result = _orig_create_response(self)
    eni = result.result["NetworkInterface"]
    tokens[token] = (eni, eni.subnet.id)
    eni.client_token = token
    return result


# --- attach / delete refusals and termination ---------------------------------------------------


def _attach_network_interface(self, eni_id, instance_id, device_index):
    eni = self.get_network_interface(eni_id)
    instance = self.get_instance(instance_id)
    if eni.instance is not None:
        raise InUse(f"Interface: '{eni_id}' in use.")
    if int(device_index) in instance.nics:
        raise InvalidParameterValue(
            f"Instance '{instance_id}' already has an interface attached at device index '{device_index}'."
        )
    if instance.state in ("terminated", "shutting-down", "pending", "stopping"):
        raise _Refused("IncorrectInstanceState",
                       f"The instance '{instance_id}' is not in a valid state for this operation.")
    if eni.subnet.availability_zone != instance._placement.zone:
        raise _Refused("InvalidParameterCombination",
                       "You may not attach a network interface to an instance if they are not in the same availability zone")
    limit = MAX_INTERFACES.get(instance.instance_type, 3)
    if len(instance.nics) >= limit:
        raise _Refused("AttachmentLimitExceeded",
                       f"Interface count {len(instance.nics) + 1} exceeds the limit for {instance.instance_type}")
    return _orig_attach(self, eni_id, instance_id, device_index)


def _attachment(self):
    """The attachment, with its status while it is attaching or detaching."""
    if not self.attachment_id:
        return None
    a = _Attachment(self)
    if getattr(self, "_detaching", False):
        a.status = "detaching"
    elif time.time() < getattr(self, "_attaching_until", 0):
        a.status = "attaching"
    return a


def _attach_latency(self, eni_id, instance_id, device_index):
    attachment = _attach_network_interface(self, eni_id, instance_id, device_index)
    eni = self.get_network_interface(eni_id)
    seconds = _subnet_seconds(eni, ATTACH_TAG)
    if seconds:
        eni._attaching_until = time.time() + seconds
        attachment.status = "attaching"
    return attachment


def _detach_network_interface(self, attachment_id):
    eni = next((e for e in self.enis.values() if e.attachment_id == attachment_id), None)
    seconds = _subnet_seconds(eni, DETACH_TAG) if eni is not None else 0.0
    if not seconds or eni.instance is None:
        return _orig_detach(self, attachment_id)
    if getattr(eni, "_detaching", False):
        return None  # already on its way
    eni._detaching = True

    def finish():
        try:
            if eni.attachment_id == attachment_id and eni.instance is not None:
                eni.instance.detach_eni(eni)
        finally:
            eni._detaching = False

    timer = threading.Timer(seconds, finish)
    timer.daemon = True
    timer.start()
    return None


def _delete_network_interface(self, eni_id):
    eni = self.enis.get(eni_id)
    if eni is not None and eni.instance is not None:
        raise InUse(f"Network interface '{eni_id}' is currently in use.")
    return _orig_delete(self, eni_id)


def _instance_init(self, *args, **kwargs):
    _orig_instance_init(self, *args, **kwargs)
    seconds = self.ec2_backend.tags.get(self.subnet_id, {}).get(INSTANCE_PENDING_TAG) if self.subnet_id else None
    if not seconds:
        return
    self._state = InstanceState("pending", 0)

    def running():
        if self._state.name == "pending":
            self._state = InstanceState("running", 16)

    timer = threading.Timer(float(seconds), running)
    timer.daemon = True
    timer.start()


def _terminate(self):
    for index, nic in list(self.nics.items()):
        if index > 0 and not nic.delete_on_termination:
            self.detach_eni(nic)
    return _orig_terminate(self)


def apply():
    """Patch moto: interface status, idempotent creation, attach/delete refusals, detach at
    termination."""
    global _orig_get_filter_value, _orig_create, _orig_create_response, _orig_attach, _orig_delete, _orig_terminate, _orig_detach, _orig_instance_init
    _orig_instance_init = Instance.__init__
    Instance.__init__ = _instance_init
    NetworkInterface.status = property(_get_status, _set_status)
    _orig_get_filter_value = NetworkInterface.get_filter_value
    NetworkInterface.get_filter_value = _get_filter_value
    _orig_create = NetworkInterfaceBackend.create_network_interface
    NetworkInterfaceBackend.create_network_interface = _create_network_interface
    _orig_create_response = ElasticNetworkInterfaces.create_network_interface
    ElasticNetworkInterfaces.create_network_interface = _create_network_interface_response
    _orig_attach = NetworkInterfaceBackend.attach_network_interface
    NetworkInterfaceBackend.attach_network_interface = _attach_latency
    NetworkInterface.attachment = property(_attachment)
    _orig_detach = NetworkInterfaceBackend.detach_network_interface
    NetworkInterfaceBackend.detach_network_interface = _detach_network_interface
    _orig_delete = NetworkInterfaceBackend.delete_network_interface
    NetworkInterfaceBackend.delete_network_interface = _delete_network_interface
    # Termination, inner layer: Instance.terminate detaches the secondary interfaces, then runs
    # moto's; ecs.py wraps the backend call around it (see moto_ext.apply).
    _orig_terminate = Instance.terminate
    Instance.terminate = _terminate
