#!/usr/bin/env python3
"""bench/cluster: three `opsd daemon` replicas as one cluster on the sandbox's DynamoDB Local, next
to a single daemon running the same jobs, side by side in one run; then the capacity leader's
failover.

Phase 1, jobs: J job files on `@every 10s` (each `true` on one sandbox host, targeted by tag through
moto) for M minutes. From the cluster table and the replicas' own stores: firings claimed per
second, duplicate firings (a firing run by two replicas) and lost ones (a rate instant of the window
that nobody claimed), how late claims land after the scheduled instant, and from the replicas'
metrics: the claim's own latency (`opsd_cluster_claim_seconds`) and DynamoDB requests per firing
(`opsd_cluster_requests_total`). CPU and peak RSS of each replica and of the single daemon over the
same window.

Phase 2, failover: three replicas with a capacity controller (an ECS cluster and a Spot Fleet in
moto, the default 20 s `leader_lease`); N times: kill -9 the leader and raise the demand, and time
until the fleet's target changes (the new leader's first action). Loopback only.
"""
import argparse
import json
import os
import random
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import time
import urllib.request

import boto3

from sandbox_common import ROOT, sandbox_env, workspace
import sandbox  # noqa: E402  (scripts/sandbox.py, on the path sandbox_common set)

OPSD = os.environ.get("OPSD_BIN") or os.path.join(ROOT, "target", "release", "opsd")
TICK = os.sysconf("SC_CLK_TCK")
# DynamoDB Local itself, not the sandbox's throttling proxy in front of it (a Python hop per request).
ENV = dict(sandbox_env(), AWS_ENDPOINT_URL_DYNAMODB=f"http://127.0.0.1:{sandbox.load_state()['dynamodb_port']}")
PERIOD = 10


def client(service, endpoint=None):
    return boto3.client(service, endpoint_url=endpoint or ENV["AWS_ENDPOINT_URL"], region_name=ENV["AWS_REGION"],
                        aws_access_key_id=ENV["AWS_ACCESS_KEY_ID"], aws_secret_access_key=ENV["AWS_SECRET_ACCESS_KEY"])


ddb = client("dynamodb", ENV["AWS_ENDPOINT_URL_DYNAMODB"])


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        s = f.read()
    fields = s[s.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def peak_rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


class Daemon:
    def __init__(self, work, name, env):
        self.name = name
        self.state = os.path.join(work, f"state-{name}")
        self.port = free_port()
        self.log = open(os.path.join(work, f"{name}.log"), "w")
        self.env = dict(ENV, OPSD_CONFIG=os.path.join(work, "opsd.toml"), OPSD_STATE_DIR=self.state,
                        OPSD_METRICS_LISTEN=f"127.0.0.1:{self.port}", **env)
        self.start()

    def start(self):
        self.p = subprocess.Popen([OPSD, "daemon"], env=self.env, stdout=self.log, stderr=subprocess.STDOUT)

    def kill(self):
        self.p.send_signal(signal.SIGKILL)
        self.p.wait()

    def stop(self):
        self.p.send_signal(signal.SIGTERM)
        self.p.wait(timeout=60)

    def metrics(self):
        for _ in range(100):
            try:
                return urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5).read().decode()
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"{self.name}: no metrics endpoint")


def series(text, name):
    """(labels, value) of every sample of `name`."""
    out = []
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            labels, _, value = line.rpartition(" ")
            out.append((labels[len(name):], float(value)))
    return out


def histogram_quantile(q, buckets):
    """The q-quantile from cumulative (upper bound, count) buckets, interpolated inside a bucket."""
    buckets = sorted(buckets)
    total = buckets[-1][1]
    want = q * total
    lo_bound, lo_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= want:
            if bound == float("inf"):
                return lo_bound
            frac = (want - lo_count) / (count - lo_count) if count > lo_count else 0
            return lo_bound + (bound - lo_bound) * frac
        lo_bound, lo_count = bound, count
    return lo_bound


def write_jobs(jobs_dir, n, tag):
    os.makedirs(jobs_dir, exist_ok=True)
    for i in range(n):
        with open(os.path.join(jobs_dir, f"job-{i:04}.toml"), "w") as f:
            f.write(f'schedule = "@every {PERIOD}s"\noverlap = "allow"\n[target]\ntags = {{ Bench = "{tag}" }}\n'
                    '[run]\ncommands = ["true"]\n')


def table_items(table, pk):
    items, start = [], None
    while True:
        kw = dict(TableName=table, KeyConditionExpression="pk = :pk",
                  ExpressionAttributeValues={":pk": {"S": pk}}, ConsistentRead=True)
        if start:
            kw["ExclusiveStartKey"] = start
        page = ddb.query(**kw)
        items += page["Items"]
        start = page.get("LastEvaluatedKey")
        if not start:
            return items


def epoch(ts):
    from datetime import datetime
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def opsd(work, *args):
    env = dict(ENV, OPSD_CONFIG=os.path.join(work, "opsd.toml"))
    r = subprocess.run([OPSD, *args], env=env, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"opsd {' '.join(args)}: {r.stderr}")


def fmt(x, d=1):
    return f"{x:.{d}f}"


def jobs_phase(n_jobs, minutes):
    tag = f"bench-cluster-{random.randrange(1 << 30):x}"
    out = subprocess.run([os.path.join(ROOT, "scripts", "sandbox"), "fleet", "1", "--tag", f"Bench={tag}"],
                         capture_output=True, text=True, check=True)
    host = json.loads(out.stdout)["instances"][0]["address"]
    table = f"bench-cluster-{random.randrange(1 << 30):x}"
    cluster = workspace("opsd-bench-cluster-", f'\n[cluster]\ntable = "{table}"\n')
    single = workspace("opsd-bench-single-")
    for w in (cluster, single):
        write_jobs(os.path.join(w, "jobs"), n_jobs, tag)
    opsd(cluster, "cluster", "init")
    replicas = [Daemon(cluster, f"r{i}", {"OPSD_CLUSTER__REPLICA": f"r{i}"}) for i in (1, 2, 3)]
    alone = Daemon(single, "single", {})
    procs = replicas + [alone]
    # Warm up: joined, anchors written, the first firings past.
    time.sleep(3 * PERIOD)
    t0 = time.time()
    cpu0 = {d.name: cpu_seconds(d.p.pid) for d in procs}
    time.sleep(minutes * 60)
    t1 = time.time()
    cpu1 = {d.name: cpu_seconds(d.p.pid) for d in procs}
    rss = {d.name: peak_rss_mib(d.p.pid) for d in procs}
    texts = {d.name: d.metrics() for d in replicas}
    # Let the last firings of the window end, then stop.
    time.sleep(PERIOD)
    for d in procs:
        d.stop()

    # The table: every claim, the anchors.
    claims, anchors = [], {}
    for i in range(n_jobs):
        for it in table_items(table, f"job#job-{i:04}"):
            sk = it["sk"]["S"]
            if sk.startswith("anchor#"):
                anchors[i] = int(it["anchor"]["N"])
            elif sk.startswith("firing#"):
                claims.append((i, epoch(it["scheduled_for"]["S"]), it.get("owner", {}).get("S", ""),
                               it.get("state", {}).get("S", ""), epoch(it["claimed_at"]["S"])))
    window = [c for c in claims if t0 <= c[1] < t1]
    claimed = {(c[0], round(c[1])) for c in window}
    expected = set()
    for i, a in anchors.items():
        k = -(-(t0 - a) // PERIOD)
        t = a + k * PERIOD
        while t < t1:
            expected.add((i, round(t)))
            t += PERIOD
    lost = len(expected - claimed)
    not_ok = sum(1 for c in window if c[3] != "succeeded")
    lateness = sorted((c[4] - c[1]) * 1000 for c in window)
    # The replicas' stores: a firing run by two replicas is a duplicate.
    runs = {}
    for d in replicas:
        db = sqlite3.connect(os.path.join(d.state, "opsd.db"))
        for job, at in db.execute("SELECT job, scheduled_for FROM runs WHERE trigger != 'manual' AND scheduled_for IS NOT NULL"):
            runs.setdefault((job, at), []).append(d.name)
    duplicates = sum(1 for v in runs.values() if len(v) > 1)
    db = sqlite3.connect(os.path.join(alone.state, "opsd.db"))
    single_runs = db.execute("SELECT COUNT(*) FROM runs WHERE scheduled_for >= ? AND scheduled_for < ?",
                             (time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t0)),
                              time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t1)))).fetchone()[0]

    buckets, requests, claims_total = {}, 0.0, 0.0
    by_op = {}
    for text in texts.values():
        for labels, v in series(text, "opsd_cluster_claim_seconds_bucket"):
            le = labels.split('le="')[1].split('"')[0]
            bound = float("inf") if le == "+Inf" else float(le)
            buckets[bound] = buckets.get(bound, 0.0) + v
        for labels, v in series(text, "opsd_cluster_requests_total"):
            requests += v
            op = labels.split('operation="')[1].split('"')[0]
            by_op[op] = by_op.get(op, 0.0) + v
        claims_total += sum(v for _, v in series(text, "opsd_cluster_claim_seconds_count"))
    all_claims = len(claims)
    per_claim = sorted(buckets.items())
    secs = t1 - t0
    cpu = {k: cpu1[k] - cpu0[k] for k in cpu1}

    print(f"## Jobs: {n_jobs} jobs on @every {PERIOD}s, {minutes} min window ({secs:.0f} s)\n")
    print(f"Host {host} (one sandbox sshd); cluster table {table} on DynamoDB Local ({ENV['AWS_ENDPOINT_URL_DYNAMODB']}); opsd {OPSD}.\n")
    print("| | firings claimed | per second | lost | duplicates | not succeeded | claim write median / p99 | scheduled → claim sent median / p99 | DynamoDB requests per firing |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    print(f"| 3 replicas | {len(window)} (of {len(expected)} due) | {len(window) / secs:.1f} | {lost} | {duplicates} | {not_ok} | "
          f"{histogram_quantile(0.5, per_claim) * 1000:.1f} / {histogram_quantile(0.99, per_claim) * 1000:.1f} ms | "
          f"{statistics.median(lateness):.0f} / {lateness[int(0.99 * (len(lateness) - 1))]:.0f} ms | "
          f"{requests / all_claims:.2f} |")
    print(f"| single daemon | {single_runs} runs | {single_runs / secs:.1f} | | | | | | |\n")
    print("DynamoDB requests by operation, all replicas, whole run (" + f"{all_claims} firings claimed): " +
          ", ".join(f"{k} {int(v)}" for k, v in sorted(by_op.items())) + "\n")
    print("| process | CPU s in window | CPU % of a core | peak RSS MiB | CPU ÷ single daemon |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for d in procs:
        print(f"| {d.name} | {cpu[d.name]:.1f} | {100 * cpu[d.name] / secs:.1f} | {rss[d.name]:.0f} | "
              f"{cpu[d.name] / cpu['single']:.2f} |")
    total = sum(cpu[d.name] for d in replicas)
    print(f"| 3 replicas together | {total:.1f} | {100 * total / secs:.1f} | | {total / cpu['single']:.2f} |\n")


def failover_phase(trials):
    ec2, ecs = client("ec2"), client("ecs")
    n = 230 + random.randrange(20)
    vpc = ec2.create_vpc(CidrBlock=f"127.{n}.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock=f"127.{n}.1.0/24")["Subnet"]["SubnetId"]
    name = f"bench-failover-{random.randrange(1 << 30):x}"
    ecs.create_cluster(clusterName=name)
    import base64
    user_data = base64.b64encode(f"#!/bin/bash\necho ECS_CLUSTER={name} >> /etc/ecs/ecs.config\n".encode()).decode()
    fleet = ec2.request_spot_fleet(SpotFleetRequestConfig={
        "TargetCapacity": 2, "IamFleetRole": "arn:aws:iam::123456789012:role/fleet", "Type": "maintain",
        "AllocationStrategy": "lowestPrice",
        "LaunchSpecifications": [{"ImageId": "ami-760aaa0f", "InstanceType": "c5.large", "SubnetId": subnet,
                                  "UserData": user_data, "WeightedCapacity": 1.0}]})["SpotFleetRequestId"]
    td = ecs.register_task_definition(family=f"{name}-td", containerDefinitions=[
        {"name": "app", "image": "app", "cpu": 1024, "memory": 2048}])["taskDefinition"]["taskDefinitionArn"]
    ecs.create_service(cluster=name, serviceName="api", taskDefinition=td, desiredCount=2)
    table = f"bench-failover-{random.randrange(1 << 30):x}"
    work = workspace("opsd-bench-failover-", f'\n[cluster]\ntable = "{table}"\n[capacity]\ncluster = "{name}"\n'
                     f'spot_fleet_request_id = "{fleet}"\nmax_capacity = 40\nmax_scale_out_step = 10\n'
                     'scale_out_cooldown = "1s"\ninterval = "1s"\n')
    opsd(work, "cluster", "init")
    replicas = {f"r{i}": Daemon(work, f"r{i}", {"OPSD_CLUSTER__REPLICA": f"r{i}"}) for i in (1, 2, 3)}

    def target():
        return ec2.describe_spot_fleet_requests(SpotFleetRequestIds=[fleet])["SpotFleetRequestConfigs"][0][
            "SpotFleetRequestConfig"]["TargetCapacity"]

    def leader():
        items = table_items(table, "lease")
        return (items[0]["holder"]["S"], int(items[0]["epoch"]["N"])) if items else ("", 0)

    def wait(what, f, limit=120):
        end = time.time() + limit
        while time.time() < end:
            if f():
                return
            time.sleep(0.1)
        sys.exit(f"bench: {what} did not happen within {limit} s")

    desired, times = 2, []
    for trial in range(trials):
        wait("a leader", lambda: leader()[0] != "")
        wait("the fleet at the demand", lambda: target() == desired)
        # Every replica joined and watching (the killed one restarted), so any may take over.
        time.sleep(5)
        holder, ep = leader()
        t0 = time.monotonic()
        replicas[holder].kill()
        desired += 1
        ecs.update_service(cluster=name, service="api", desiredCount=desired)
        wait("the new leader's scale-out", lambda: target() >= desired)
        took = time.monotonic() - t0
        new, new_ep = leader()
        times.append(took)
        print(f"  failover {trial + 1}: {holder} (epoch {ep}) killed, {new} (epoch {new_ep}) scaled out after {took:.1f} s",
              file=sys.stderr)
        replicas[holder].start()
    for d in replicas.values():
        d.stop()
    print(f"## Capacity leader failover: kill -9 of the leader to the new leader's first action ({trials} times)\n")
    print("| leader_lease | median | min | max |")
    print("| ---: | ---: | ---: | ---: |")
    print(f"| 20 s | {statistics.median(times):.1f} s | {min(times):.1f} s | {max(times):.1f} s |\n")
    print("Each: " + ", ".join(f"{t:.1f}" for t in times) + " s\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=200)
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--failovers", type=int, default=10)
    a = ap.parse_args()
    print(f"# bench/cluster ({time.strftime('%Y-%m-%d', time.gmtime())})\n")
    if a.minutes > 0:
        jobs_phase(a.jobs, a.minutes)
    if a.failovers > 0:
        failover_phase(a.failovers)


if __name__ == "__main__":
    main()
