"""What the benchmarks that run against the sandbox share: its environment (endpoint, keys, port)
and a workspace with the sandbox's config pointed at its own jobs and state directories. The paths,
the env file and the config come from scripts/sandbox.py, the one place that defines them."""
import os
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts"))

import sandbox  # noqa: E402  (scripts/sandbox.py)

ROOT = sandbox.ROOT
SANDBOX = sandbox.SB


def sandbox_env():
    """os.environ plus the sandbox's env file (AWS endpoint and credentials, SSH user, port, keys)."""
    return {**os.environ, **sandbox.read_env()}


def workspace(prefix, extra=""):
    """A temp dir with an empty jobs dir and the sandbox's config (plus `extra`) pointed at it and at
    its own state; returns the dir (the config is <dir>/opsd.toml)."""
    work = tempfile.mkdtemp(prefix=prefix)
    os.makedirs(os.path.join(work, "jobs"))
    with open(os.path.join(work, "opsd.toml"), "w") as f:
        f.write(sandbox.opsd_config(os.path.join(work, "jobs"), os.path.join(work, "state")) + extra)
    return work
