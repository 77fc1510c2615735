#!/usr/bin/env python3
"""bench/daemon: `opsd daemon` idle with 200 jobs (RSS and CPU over 60 s, time from start to READY=1)
and `opsd validate` on 1,000 job files. No AWS traffic: the jobs fire daily, the config points at the
sandbox's moto only for completeness. Run through bench/daemon (uses target/release/opsd).
"""
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

OPSD = os.environ.get("OPSD_BIN") or os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "target", "release", "opsd")
TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

JOB = '''description = "bench job {i}"
schedule = "cron({m} {h} * * ? *)"
timezone = "Europe/Berlin"
jitter = "30s"
[target]
tags = {{ Bench = "daemon-{i}" }}
[ssh]
user = "ec2-user"
identity_file = "/dev/null"
[run]
commands = ["uname -r", "uptime"]
timeout = "2m"
'''


def write_jobs(d, n):
    os.makedirs(d, exist_ok=True)
    for i in range(n):
        with open(os.path.join(d, f"job-{i:04}.toml"), "w") as f:
            f.write(JOB.format(i=i, m=i % 60, h=(i // 60) % 24))


def workspace(prefix, jobs, extra=""):
    """A temp dir with `jobs` job files and a config pointing at them; returns (dir, config path)."""
    work = tempfile.mkdtemp(prefix=prefix)
    write_jobs(os.path.join(work, "jobs"), jobs)
    cfg = os.path.join(work, "opsd.toml")
    with open(cfg, "w") as f:
        f.write(f'jobs_dir = "{work}/jobs"\nstate_dir = "{work}/state"\n{extra}')
    return work, cfg


def stat(pid):
    with open(f"/proc/{pid}/stat") as f:
        s = f.read()
    fields = s[s.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / TICK, int(fields[21]) * PAGE / 2**20


def start_daemon(jobs):
    """`opsd daemon` with `jobs` job files in a new workspace: (process, seconds from start to READY=1)."""
    work, cfg = workspace("opsd-daemon-bench-", jobs, '[aws]\nregion = "us-east-1"\n')
    sock_path = os.path.join(work, "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(sock_path)
    sock.settimeout(30)
    env = dict(os.environ, NOTIFY_SOCKET=sock_path, OPSD_CONFIG=cfg, AWS_ACCESS_KEY_ID="x", AWS_SECRET_ACCESS_KEY="x",
               AWS_ENDPOINT_URL="http://127.0.0.1:9", AWS_EC2_METADATA_DISABLED="true")
    start = time.monotonic()
    p = subprocess.Popen([OPSD, "daemon"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while True:
        msg = sock.recv(4096).decode()
        if "READY=1" in msg.splitlines():
            return p, time.monotonic() - start


def ready_times(jobs=200, runs=5):
    """Start to READY=1 of `runs` daemons, each on a new state directory: (median, min)."""
    times = []
    for _ in range(runs):
        p, ready = start_daemon(jobs)
        times.append(ready)
        p.terminate()
        p.wait(30)
    return statistics.median(times), min(times)


def daemon_idle(jobs=200, seconds=60):
    p, ready = start_daemon(jobs)
    cpu0, _ = stat(p.pid)
    rss = []
    t_end = time.monotonic() + seconds
    while time.monotonic() < t_end:
        rss.append(stat(p.pid)[1])
        time.sleep(1)
    cpu1, _ = stat(p.pid)
    p.terminate()
    p.wait(30)
    return ready, cpu1 - cpu0, max(rss), statistics.median(rss)


def validate(n=1000, runs=5):
    _, cfg = workspace("opsd-validate-bench-", n)
    times = []
    for _ in range(runs):
        start = time.monotonic()
        subprocess.run([OPSD, "--config", cfg, "validate"], check=True, stdout=subprocess.DEVNULL)
        times.append(time.monotonic() - start)
    return statistics.median(times), min(times)


def main():
    r_med, r_min = ready_times()
    _, cpu, peak, med = daemon_idle()
    v_med, v_min = validate()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"<!-- bench/daemon on {time.strftime('%Y-%m-%d')}, commit {commit}, {os.cpu_count()} cores -->")
    print("| measurement | value |")
    print("| --- | ---: |")
    print(f"| `opsd daemon`, 200 jobs: start to READY=1 (median / min of 5) | {r_med * 1000:.0f} / {r_min * 1000:.0f} ms |")
    print(f"| `opsd daemon`, 200 jobs: CPU over 60 s idle | {cpu:.2f} s |")
    print(f"| `opsd daemon`, 200 jobs: RSS over 60 s idle (median / peak) | {med:.1f} / {peak:.1f} MiB |")
    print(f"| `opsd validate`, 1,000 job files (median / min of 5) | {v_med * 1000:.0f} / {v_min * 1000:.0f} ms |")


if __name__ == "__main__":
    sys.exit(main())
