"""EC2 Instance Connect and console host keys, as AWS documents them, reaching the sandbox's sshd.

moto 5.2.5 accepts any SendSSHPublicKey and drops the key; its GetConsoleOutput has no host keys.

**SendSSHPublicKey** (EC2 Instance Connect API reference):
- InstanceId `^i-[a-f0-9]+$`, InstanceOSUser 1-32 characters (a POSIX user name), SSHPublicKey 80-4096
  characters in OpenSSH format (ssh-ed25519 or ssh-rsa only, the type inside the blob matching), an
  AvailabilityZone, when given, the instance's: otherwise `InvalidArgsException`.
- An instance that does not exist: `EC2InstanceNotFoundException`; one not `running` (pending, stopped,
  terminated): `EC2InstanceStateInvalidException`.
- The key is kept for 60 seconds, for that instance and OS user.
- Test control: an instance tagged `moto:instance-connect-error=AccessDenied` is refused as IAM refuses a
  role without `ec2-instance-connect:SendSSHPublicKey` (`AccessDeniedException`, HTTP 400);
  `=Throttling` answers `ThrottlingException`.

The keys reach sshd as EC2 Instance Connect's agent brings them: sshd's `AuthorizedKeysCommand`
(scripts/moto_ext/eic_authorized_keys, installed by scripts/sandbox) asks
`GET /moto-ext/instance-connect/keys?address=ADDR&user=USER` for the keys pushed, less than 60 s ago,
to the running instance whose private address the connection came to. `POST
/moto-ext/instance-connect/age {"instance_id": ..., "seconds": N}` ages an instance's pushed keys by N
seconds (a test of the window without waiting a minute; the window itself stays 60 s).

**GetConsoleOutput**: base64 output, as AWS returns it, with cloud-init's host-key blocks (the
fingerprints, prefixed `ec2: `, and `-----BEGIN SSH HOST KEY KEYS-----` … `-----END SSH HOST KEY
KEYS-----`) carrying the sandbox sshd's real host key (MOTO_EXT_HOST_KEY, a `.pub` file; default the
sandbox's `target/sandbox/keys/host_ed25519.pub`). Test control, per instance or per subnet tag:
- `moto:console-host-keys=none`: boot output without the blocks (an AMI whose cloud-init does not
  print them); `=wrong`: the blocks carry a key the host does not have.
- `moto:console-seconds=N`: no output until N seconds after launch (AWS has none for a while after boot).
"""
import base64
import hashlib
import json
import os
import re
import threading
import time
import urllib.parse

from moto.core.exceptions import JsonRESTError
from moto.ec2.models import ec2_backends
from moto.ec2.responses.general import SAMPLE_CONSOLE_OUTPUT, General
from moto.ec2.utils import Base64EncodedString
from moto.ec2instanceconnect.responses import Ec2InstanceConnectResponse
from moto.moto_server.werkzeug_app import DomainDispatcherApplication

from . import faults

KEY_SECONDS = 60
KEYS_PATH = "/moto-ext/instance-connect/keys"
AGE_PATH = "/moto-ext/instance-connect/age"
ERROR_TAG = "moto:instance-connect-error"
CONSOLE_TAG = "moto:console-host-keys"
CONSOLE_SECONDS_TAG = "moto:console-seconds"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_HOST_KEY = os.path.join(ROOT, "target", "sandbox", "keys", "host_ed25519.pub")
USER = re.compile(r"^[A-Za-z_][A-Za-z0-9@._-]{0,30}[A-Za-z0-9$_-]?$")
KEY_TYPES = ("ssh-ed25519", "ssh-rsa")  # EC2 Instance Connect takes ED25519 and RSA keys only

_lock = threading.Lock()
# instance id -> (the instance, [[os user, "type base64", pushed at (time.time())], ...]). The instance
# object is kept so a lookup by address scans only instances with recent keys, never the whole fleet
# (one lookup per SSH connection); its state is read live, so a terminated instance's keys stop at once.
_pushed = {}


def _invalid(message):
    return JsonRESTError("InvalidArgsException", message)


def _find_instance(backend, instance_id):
    try:
        return backend.get_instance(instance_id)
    except Exception:  # moto's InvalidInstanceIDError
        return None


def _tag(instance, key):
    """An instance's tag, else its subnet's (test controls set on a subnet reach every instance in it)."""
    tags = instance.ec2_backend.tags
    value = tags.get(instance.id, {}).get(key)
    if value is None and getattr(instance, "subnet_id", None):
        value = tags.get(instance.subnet_id, {}).get(key)
    return value


def _check_key(key):
    if not 80 <= len(key) <= 4096:
        raise _invalid(f"SSHPublicKey must be 80 to 4096 characters long, not {len(key)}")
    parts = key.split()
    if len(parts) < 2 or parts[0] not in KEY_TYPES:
        raise _invalid("SSHPublicKey must be an OpenSSH public key (ssh-ed25519 or ssh-rsa)")
    try:
        blob = base64.b64decode(parts[1], validate=True)
        n = int.from_bytes(blob[:4], "big")
        inner = blob[4:4 + n].decode()
    except (ValueError, UnicodeDecodeError):
        raise _invalid("SSHPublicKey is not a valid OpenSSH public key: its key data is not base64")
    if inner != parts[0]:
        raise _invalid(f"SSHPublicKey says {parts[0]} but its key data is {inner or 'unreadable'}")
    return f"{parts[0]} {parts[1]}"


def send_ssh_public_key(self):
    params = json.loads(self.body or "{}")
    instance_id = params.get("InstanceId") or ""
    user = params.get("InstanceOSUser") or ""
    key = params.get("SSHPublicKey") or ""
    zone = params.get("AvailabilityZone")
    if not re.fullmatch(r"i-[a-f0-9]+", instance_id) or not 10 <= len(instance_id) <= 32:
        raise _invalid(f"InstanceId {instance_id!r} is not a valid instance id")
    if not 1 <= len(user) <= 32 or not USER.match(user):
        raise _invalid(f"InstanceOSUser {user!r} must be a user name of 1 to 32 characters")
    key = _check_key(key)
    instance = _find_instance(ec2_backends[self.current_account][self.region], instance_id)
    if instance is None:
        raise JsonRESTError("EC2InstanceNotFoundException", f"Instance {instance_id} not found")
    error = _tag(instance, ERROR_TAG)
    if error == "AccessDenied":
        arn = f"arn:aws:ec2:{instance.region_name}:{instance.ec2_backend.account_id}:instance/{instance_id}"
        raise JsonRESTError(
            "AccessDeniedException",
            f"User: arn:aws:sts::{instance.ec2_backend.account_id}:assumed-role/opsd/opsd is not authorized "
            f"to perform: ec2-instance-connect:SendSSHPublicKey on resource: {arn} because no "
            "identity-based policy allows the ec2-instance-connect:SendSSHPublicKey action",
        )
    if error == "Throttling":
        raise JsonRESTError("ThrottlingException", "The requests were made too frequently and have been throttled.")
    if zone and zone != instance.availability_zone:
        raise _invalid(f"AvailabilityZone {zone} is not the instance's ({instance.availability_zone})")
    if instance.state != "running":
        raise JsonRESTError(
            "EC2InstanceStateInvalidException",
            f"Unable to connect because the instance is not in a valid state ({instance.state}). Connecting "
            "to a stopped or terminated instance is not supported.",
        )
    with _lock:
        now = time.time()
        kept = [p for p in _pushed.get(instance_id, (None, []))[1] if now - p[2] < KEY_SECONDS]
        kept.append([user, key, now])
        _pushed[instance_id] = (instance, kept)
        # Forget instances whose keys have all expired.
        for gone in [i for i, (_, ks) in _pushed.items() if all(now - k[2] >= KEY_SECONDS for k in ks)]:
            del _pushed[gone]
    request_id = hashlib.sha1(f"{instance_id}{now}".encode()).hexdigest()
    return json.dumps({"RequestId": request_id, "Success": True})


def _keys_for(address, user):
    now = time.time()
    with _lock:
        return [k for instance, keys in _pushed.values()
                if instance.private_ip == address and instance.state == "running"
                for u, k, at in keys if u == user and now - at < KEY_SECONDS]


def _control(environ, start_response):
    path = environ.get("PATH_INFO")
    method = environ["REQUEST_METHOD"]

    def answer(status, body, kind="application/json"):
        body = body.encode()
        start_response(status, [("Content-Type", kind), ("Content-Length", str(len(body)))])
        return [body]

    if path == KEYS_PATH and method == "GET":
        q = dict(urllib.parse.parse_qsl(environ.get("QUERY_STRING", "")))
        keys = _keys_for(q.get("address", ""), q.get("user", ""))
        return answer("200 OK", "".join(k + "\n" for k in keys), "text/plain")
    if path == AGE_PATH and method == "POST":
        spec = json.loads(faults._body(environ) or b"{}")
        with _lock:
            for p in _pushed.get(spec.get("instance_id"), (None, []))[1]:
                p[2] -= float(spec.get("seconds", 0))
        return answer("200 OK", json.dumps({"ok": True}))
    return answer("404 Not Found", json.dumps({"error": f"{method} {path}: no such control"}))


# --- console output ------------------------------------------------------------------------------

_wrong_key = None


def _host_keys():
    path = os.environ.get("MOTO_EXT_HOST_KEY", DEFAULT_HOST_KEY)
    with open(path) as f:
        kind, b64 = f.read().split()[:2]
    return [f"{kind} {b64}"]


def _a_wrong_key():
    """A valid ed25519 public key no sandbox host has (made once per moto)."""
    global _wrong_key
    if _wrong_key is None:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        public = Ed25519PrivateKey.generate().public_key()
        _wrong_key = public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    return _wrong_key


def _fingerprint(key):
    digest = hashlib.sha256(base64.b64decode(key.split()[1])).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def console_text(instance):
    """The console as cloud-init leaves it on first boot; None while the console has no output yet."""
    delay = float(_tag(instance, CONSOLE_SECONDS_TAG) or 0)
    born = faults._created.get(instance.id)
    if delay and born is not None and time.monotonic() - born < delay:
        return None
    mode = _tag(instance, CONSOLE_TAG)
    text = SAMPLE_CONSOLE_OUTPUT + "Cloud-init v. 22.2.2 running 'modules:final'\n"
    if mode == "none":
        return text + "Cloud-init v. 22.2.2 finished\n"
    keys = [_a_wrong_key()] if mode == "wrong" else _host_keys()
    host = "ip-" + (instance.private_ip or "0.0.0.0").replace(".", "-")
    text += "ec2: \nec2: #############################################################\n"
    text += "ec2: -----BEGIN SSH HOST KEY FINGERPRINTS-----\n"
    for k in keys:
        text += f"ec2: 256 {_fingerprint(k)} root@{host} ({k.split()[0].removeprefix('ssh-').upper()})\n"
    text += "ec2: -----END SSH HOST KEY FINGERPRINTS-----\n"
    text += "ec2: #############################################################\n"
    text += "-----BEGIN SSH HOST KEY KEYS-----\n"
    text += "".join(f"{k} root@{host}\n" for k in keys)
    text += "-----END SSH HOST KEY KEYS-----\n"
    return text + "Cloud-init v. 22.2.2 finished\n"


def get_console_output(self):
    from moto.core.responses import ActionResult
    from moto.core.utils import utcnow

    instance = self.ec2_backend.get_instance(self._get_param("InstanceId"))
    result = {"InstanceId": instance.id, "Timestamp": utcnow()}
    text = console_text(instance)
    if text is not None:
        result["Output"] = Base64EncodedString.from_raw_string(text)
    return ActionResult(result)


def _call(original):
    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO", "").startswith("/moto-ext/instance-connect/"):
            return _control(environ, start_response)
        return original(self, environ, start_response)

    return __call__


def apply():
    Ec2InstanceConnectResponse.send_ssh_public_key = send_ssh_public_key
    General.get_console_output = get_console_output
    DomainDispatcherApplication.__call__ = _call(DomainDispatcherApplication.__call__)
