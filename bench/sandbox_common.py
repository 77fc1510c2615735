"""What the benchmarks that run against the sandbox share: its environment (endpoint, keys, port)
and a workspace with the sandbox's config pointed at its own jobs and state directories."""
import os
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SANDBOX = os.path.join(ROOT, "target", "sandbox")


def sandbox_env():
    """os.environ plus the sandbox's env file (AWS endpoint and credentials, SSH user, port, keys)."""
    env = dict(os.environ)
    with open(os.path.join(SANDBOX, "env")) as f:
        for line in f:
            k, _, v = line.strip().partition("=")
            if k:
                env[k] = v
    return env


def workspace(prefix, extra=""):
    """A temp dir with an empty jobs dir and the sandbox's config (plus `extra`) pointed at it and at
    its own state; returns the dir (the config is <dir>/opsd.toml)."""
    work = tempfile.mkdtemp(prefix=prefix)
    os.makedirs(os.path.join(work, "jobs"))
    with open(os.path.join(SANDBOX, "opsd.toml")) as f:
        cfg = f.read().replace(f'jobs_dir = "{ROOT}/jobs"', f'jobs_dir = "{work}/jobs"').replace(
            f'state_dir = "{SANDBOX}/state"', f'state_dir = "{work}/state"')
    with open(os.path.join(work, "opsd.toml"), "w") as f:
        f.write(cfg + extra)
    return work
