"""Faults AWS documents, switched on per client: the sandbox fails the way AWS fails.

AWS scopes throttling to an account and a region; the sandbox scopes every fault to the access key
of the request, so a test switches faults on for the opsd it starts (each test's opsd signs with a
key of its own) and leaves every other test, and its own setup calls, alone. moto maps any unknown
key to the default account, so the resources are the same ones.

Control (not an AWS API): `POST /moto-ext/faults` with a JSON body

    {"access_key": "AKIA…",
     "throttle": {"ec2": "documented", "autoscaling": [burst, per_second], "ecs": [...], "sqs": [...]},
     (or per action: "ec2": {"*": "documented", "CreateNetworkInterface": [10, 2]}),
     "errors": {"autoscaling": 0.1, "ec2": 0.05, "ecs": 0.05, "sqs": 0.0},
     "after": 0.5,
     "not_found_seconds": 5,
     "seed": 1}

replaces the key's faults (an empty object but for the key switches them off); `GET
/moto-ext/faults?access_key=…` answers what was injected so far, by error code and action.

- **throttle**: a token bucket per API (AWS evaluates each API on its own), of `burst` tokens refilled
  at `per_second`. `"documented"` for EC2 means the request-token buckets of "Request throttling for the
  Amazon EC2 API": mutating actions 200 tokens at 5/s, non-mutating (Describe*, Get*, List*) 100 at 20/s.
  Refused requests answer as each service does: EC2 `RequestLimitExceeded` (HTTP 503), Auto Scaling
  `Throttling` (400, "Rate exceeded"), ECS `ThrottlingException` (400), SQS `RequestThrottled` (400).
- **errors**: the share of requests refused with the service's documented transient server error:
  Auto Scaling `ResourceContention` (500), EC2 `Unavailable` (503) or `InternalError` (500), ECS
  `ServerException` (500), SQS `InternalError` (500).
- **after**: the share of those errors that come after the request took effect (its answer lost, as
  when a connection drops): the client cannot tell, and must be idempotent.
- **not_found_seconds**: EC2's eventual consistency. For this long after an instance or a network
  interface was created, an EC2 request naming it (InstanceId, NetworkInterfaceId) answers
  `InvalidInstanceID.NotFound` / `InvalidNetworkInterfaceID.NotFound`, as AWS documents for IDs that
  have not propagated yet.
"""
import io
import json
import random
import re
import threading
import time
import urllib.parse
import uuid

from moto.ec2.models.elastic_network_interfaces import NetworkInterface
from moto.ec2.models.instances import Instance
from moto.moto_server.werkzeug_app import DomainDispatcherApplication

CONTROL_PATH = "/moto-ext/faults"

# "Request throttling for the Amazon EC2 API": request-token bucket (size, refill per second).
EC2_MUTATING = (200.0, 5.0)
EC2_NON_MUTATING = (100.0, 20.0)

_lock = threading.Lock()
_rules = {}  # access key -> Rules
_created = {}  # instance or interface id -> time.monotonic() of its creation


class Bucket:
    def __init__(self, burst, rate):
        self.burst, self.rate = float(burst), float(rate)
        self.tokens, self.last = self.burst, time.monotonic()

    def take(self):
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class Rules:
    def __init__(self, spec):
        self.throttle = spec.get("throttle", {})
        self.errors = spec.get("errors", {})
        self.after = float(spec.get("after", 0.0))
        self.not_found = float(spec.get("not_found_seconds", 0.0))
        self.random = random.Random(spec.get("seed"))
        self.buckets = {}
        self.injected = {}

    def bucket(self, service, action):
        spec = self.throttle.get(service)
        if isinstance(spec, dict):
            spec = spec.get(action, spec.get("*"))
        if spec is None:
            return None
        key = (service, action)
        if key not in self.buckets:
            if spec == "documented":
                if service != "ec2":
                    raise ValueError(f"only EC2 documents its buckets; give [burst, per_second] for {service}")
                spec = EC2_NON_MUTATING if re.match(r"(Describe|Get|List)", action) else EC2_MUTATING
            self.buckets[key] = Bucket(*spec)
        return self.buckets[key]

    def count(self, code, action):
        by_action = self.injected.setdefault(code, {})
        by_action[action] = by_action.get(action, 0) + 1


# --- errors in each service's own protocol -------------------------------------------------------

THROTTLED = {
    "ec2": (503, "RequestLimitExceeded", "Request limit exceeded."),
    "autoscaling": (400, "Throttling", "Rate exceeded"),
    "ecs": (400, "ThrottlingException", "Rate exceeded"),
    "sqs": (400, "RequestThrottled", "Request is throttled."),
}
SERVER_ERRORS = {
    "ec2": [(503, "Unavailable", "The server is overloaded and can't handle the request."),
            (500, "InternalError", "An internal error has occurred.")],
    "autoscaling": [(500, "ResourceContention",
                     "You already have a pending update to an Auto Scaling resource "
                     "(for example, a group, instance, or load balancer).")],
    "ecs": [(500, "ServerException", "Server exception.")],
    "sqs": [(500, "InternalError", "We encountered an internal error. Please try again.")],
}
JSON_PREFIX = {"ecs": "", "sqs": "com.amazonaws.sqs#"}


def _error(service, json_protocol, status, code, message, start_response):
    rid = str(uuid.uuid4())
    if json_protocol:
        body = json.dumps({"__type": JSON_PREFIX.get(service, "") + code, "message": message}).encode()
        headers = [("Content-Type", "application/x-amz-json-1.1"), ("x-amzn-RequestId", rid)]
        if service == "sqs":
            headers.append(("x-amzn-query-error", f"{code};{'Sender' if status < 500 else 'Receiver'}"))
    elif service == "ec2":
        body = (f'<?xml version="1.0" encoding="UTF-8"?><Response><Errors><Error><Code>{code}</Code>'
                f"<Message>{message}</Message></Error></Errors><RequestID>{rid}</RequestID></Response>").encode()
        headers = [("Content-Type", "text/xml")]
    else:
        kind = "Sender" if status < 500 else "Receiver"
        body = (f'<ErrorResponse><Error><Type>{kind}</Type><Code>{code}</Code><Message>{message}</Message>'
                f"</Error><RequestId>{rid}</RequestId></ErrorResponse>").encode()
        headers = [("Content-Type", "text/xml")]
    reason = {400: "Bad Request", 500: "Internal Server Error", 503: "Service Unavailable"}[status]
    start_response(f"{status} {reason}", headers + [("Content-Length", str(len(body)))])
    return [body]


# --- the request: who, which service, which action, which ids ------------------------------------

_CREDENTIAL = re.compile(r"Credential=([^/]+)/[^/]+/[^/]+/([^/]+)/")


def _who(environ):
    m = _CREDENTIAL.search(environ.get("HTTP_AUTHORIZATION", ""))
    return (m.group(1), m.group(2)) if m else (None, None)


def _body(environ):
    """The request body, read once and put back for moto."""
    try:
        n = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        n = 0
    body = environ["wsgi.input"].read(n) if n > 0 else b""
    environ["wsgi.input"] = io.BytesIO(body)
    return body


def _action(environ, body):
    """(action, form parameters, whether the request is in a JSON protocol)."""
    target = environ.get("HTTP_X_AMZ_TARGET")
    if target:
        return target.rsplit(".", 1)[-1], {}, True
    params = dict(urllib.parse.parse_qsl(environ.get("QUERY_STRING", "")))
    if body and "json" not in environ.get("CONTENT_TYPE", ""):
        params.update(urllib.parse.parse_qsl(body.decode("utf-8", "replace")))
    return params.get("Action", ""), params, False


_ID_PARAM = re.compile(r"^(InstanceId|NetworkInterfaceId)(\.\d+)?$")


def _not_yet_visible(params, window):
    """The (code, message) of the first id in `params` created less than `window` seconds ago."""
    now = time.monotonic()
    for key, value in params.items():
        m = _ID_PARAM.match(key)
        if not m:
            continue
        born = _created.get(value)
        if born is not None and now - born < window:
            if m.group(1) == "InstanceId":
                return "InvalidInstanceID.NotFound", f"The instance ID '{value}' does not exist"
            return "InvalidNetworkInterfaceID.NotFound", f"The networkInterface ID '{value}' does not exist"
    return None


# --- the layer in front of moto ------------------------------------------------------------------


def _control(environ, start_response):
    method = environ["REQUEST_METHOD"]

    def answer(status, doc):
        body = json.dumps(doc).encode()
        start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]

    if method == "POST":
        spec = json.loads(_body(environ) or b"{}")
        key = spec.get("access_key")
        if not key:
            return answer("400 Bad Request", {"error": "access_key is required"})
        try:
            rules = Rules(spec)
            for service, s in rules.throttle.items():
                specs = s.values() if isinstance(s, dict) else [s]
                if "documented" in specs and service != "ec2":
                    raise ValueError(f"only EC2 documents its buckets; give [burst, per_second] for {service}")
        except (TypeError, ValueError) as e:
            return answer("400 Bad Request", {"error": str(e)})
        with _lock:
            _rules[key] = rules
        return answer("200 OK", {"ok": True})
    if method == "GET":
        key = dict(urllib.parse.parse_qsl(environ.get("QUERY_STRING", ""))).get("access_key")
        with _lock:
            rules = _rules.get(key)
            return answer("200 OK", {"injected": rules.injected if rules else {}})
    return answer("405 Method Not Allowed", {"error": "GET or POST"})


def _decide(rules, service, action, params):
    """What to do with one request: None (serve it), ("before", error) or ("after", error)."""
    with _lock:
        if rules.not_found and service == "ec2":
            hidden = _not_yet_visible(params, rules.not_found)
            if hidden:
                rules.count(hidden[0], action)
                return "before", (400, hidden[0], hidden[1])
        bucket = rules.bucket(service, action)
        if bucket is not None and not bucket.take():
            status, code, message = THROTTLED[service]
            rules.count(code, action)
            return "before", (status, code, message)
        rate = float(rules.errors.get(service, 0.0))
        if rate and rules.random.random() < rate:
            status, code, message = rules.random.choice(SERVER_ERRORS[service])
            when = "after" if rules.random.random() < rules.after else "before"
            rules.count(code if when == "before" else f"{code} (after)", action)
            return when, (status, code, message)
    return None


def _call(original):
    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO") == CONTROL_PATH:
            return _control(environ, start_response)
        key, service = _who(environ)
        rules = _rules.get(key) if key else None
        if rules is None or service not in THROTTLED:
            return original(self, environ, start_response)
        action, params, json_protocol = _action(environ, _body(environ))
        decision = _decide(rules, service, action, params)
        if decision is None:
            return original(self, environ, start_response)
        when, (status, code, message) = decision
        if when == "after":
            # The request takes effect; its answer is lost on the way back.
            for _ in original(self, environ, lambda *a, **k: None):
                pass
        return _error(service, json_protocol, status, code, message, start_response)

    return __call__


def _born(original):
    def __init__(self, *args, **kwargs):
        original(self, *args, **kwargs)
        _created[self.id] = time.monotonic()

    return __init__


def apply():
    DomainDispatcherApplication.__call__ = _call(DomainDispatcherApplication.__call__)
    NetworkInterface.__init__ = _born(NetworkInterface.__init__)
    Instance.__init__ = _born(Instance.__init__)
