#!/usr/bin/env python3
"""bench/soak: `opsd daemon` for a long while (default 30 minutes) with everything on at once, and
AWS failing as it documents: 50 jobs on `@every 10s` over sandbox hosts, lifecycle traffic (a group
with launch and terminate hooks scaled between 0 and 4 every minute), a capacity controller (an ECS
service whose demand changes every 3 minutes, on a Spot Fleet), and the sandbox's faults switched on
for the daemon's access key (EC2's documented request buckets, Auto Scaling/ECS/SQS buckets, 5 %
ResourceContention, 2 % EC2 and ECS server errors, a third of them after taking effect, new ids
NotFound for 3 s).

Every 30 s: the daemon's RSS, open file descriptors, threads, CPU and the store's size. At the end:
the slope of each after the warm-up (least squares), and every firing accounted for (per job, the
recorded firings are 10 s apart from the first to the last, none missing, none twice).
Run through bench/soak (uses target/release/opsd, or $OPSD_BIN).
"""
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from datetime import datetime

import boto3

from sandbox_common import ROOT, sandbox_env, workspace as sandbox_workspace

OPSD = os.environ.get("OPSD_BIN") or os.path.join(ROOT, "target", "release", "opsd")
MINUTES = float(sys.argv[1]) if len(sys.argv) > 1 else 30.0
WARMUP_MIN = min(5.0, MINUTES / 3)
SAMPLE_S = 30
JOBS, PERIOD, FLEETS, HOSTS_PER_FLEET = 50, 10, 5, 2
TICK = os.sysconf("SC_CLK_TCK")
ENV = sandbox_env()
KEY = f"AKIASOAK{random.randrange(1 << 40):010X}"
FAULTS = {
    "throttle": {"ec2": "documented", "autoscaling": [20, 10], "ecs": [50, 20], "sqs": [50, 25]},
    "errors": {"autoscaling": 0.05, "ec2": 0.02, "ecs": 0.02},
    "after": 0.3,
    "not_found_seconds": 3,
    "seed": 30,
}


def client(service):
    return boto3.client(service, endpoint_url=ENV["AWS_ENDPOINT_URL"], region_name=ENV["AWS_REGION"],
                        aws_access_key_id=ENV["AWS_ACCESS_KEY_ID"], aws_secret_access_key=ENV["AWS_SECRET_ACCESS_KEY"])


ec2, asg, sqs, ecs = client("ec2"), client("autoscaling"), client("sqs"), client("ecs")


def faults(spec):
    body = json.dumps(dict(spec, access_key=KEY)).encode()
    req = urllib.request.Request(ENV["AWS_ENDPOINT_URL"] + "/moto-ext/faults", data=body, method="POST")
    urllib.request.urlopen(req).read()


def injected():
    with urllib.request.urlopen(f"{ENV['AWS_ENDPOINT_URL']}/moto-ext/faults?access_key={KEY}") as r:
        return json.load(r)["injected"]


def network(net):
    vpc = ec2.create_vpc(CidrBlock=f"127.{net}.0.0/16")["Vpc"]["VpcId"]
    return [ec2.create_subnet(VpcId=vpc, CidrBlock=f"127.{net}.{16 * i}.0/20", AvailabilityZone=z)["Subnet"]["SubnetId"]
            for i, z in enumerate(["us-east-1a", "us-east-1b"])]


def lifecycle_group(net):
    name = f"soak-{random.randrange(1 << 30):x}"
    subnets = network(net)
    dlq = sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    queue = sqs.create_queue(QueueName=name, Attributes={
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "10"})})["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    asg.create_launch_configuration(LaunchConfigurationName=f"{name}-lc", ImageId="ami-760aaa0f", InstanceType="t3.micro")
    asg.create_auto_scaling_group(AutoScalingGroupName=name, LaunchConfigurationName=f"{name}-lc", MinSize=0,
                                  MaxSize=10, DesiredCapacity=0, VPCZoneIdentifier=",".join(subnets))
    for hook, transition in [("launch", "autoscaling:EC2_INSTANCE_LAUNCHING"), ("terminate", "autoscaling:EC2_INSTANCE_TERMINATING")]:
        asg.put_lifecycle_hook(AutoScalingGroupName=name, LifecycleHookName=hook, LifecycleTransition=transition,
                               HeartbeatTimeout=300, DefaultResult="ABANDON", NotificationTargetARN=arn,
                               RoleARN="arn:aws:iam::123456789012:role/opsd-hooks")
    return name, queue, dlq, subnets


def capacity_cluster(net):
    name = f"soak-ecs-{random.randrange(1 << 30):x}"
    subnet = network(net)[0]
    ecs.create_cluster(clusterName=name)
    import base64
    user_data = base64.b64encode(f"#!/bin/bash\necho ECS_CLUSTER={name} >> /etc/ecs/ecs.config\n".encode()).decode()
    spec = {"ImageId": "ami-760aaa0f", "InstanceType": "c5.large", "SubnetId": subnet, "UserData": user_data}
    fleet = ec2.request_spot_fleet(SpotFleetRequestConfig={
        "TargetCapacity": 1, "IamFleetRole": "arn:aws:iam::123456789012:role/fleet",
        "AllocationStrategy": "lowestPrice", "Type": "maintain", "LaunchSpecifications": [spec]})["SpotFleetRequestId"]
    td = ecs.register_task_definition(family=name, containerDefinitions=[
        {"name": "app", "image": "busybox", "cpu": 1024, "memory": 1024}])["taskDefinition"]["taskDefinitionArn"]
    ecs.create_service(cluster=name, serviceName="api", taskDefinition=td, desiredCount=1)
    return name, fleet


def write_jobs(jobs_dir, tags):
    for i in range(JOBS):
        with open(os.path.join(jobs_dir, f"soak-{i:02}.toml"), "w") as f:
            f.write(f'schedule = "@every {PERIOD}s"\n[target]\ntags = {{ Soak = "{tags[i % len(tags)]}" }}\n'
                    '[run]\ncommands = ["true"]\ntimeout = "30s"\n')


def sample(pid, work):
    with open(f"/proc/{pid}/status") as f:
        status = dict(line.split(":", 1) for line in f if ":" in line)
    with open(f"/proc/{pid}/stat") as f:
        s = f.read()
    fields = s[s.rindex(")") + 2:].split()
    db = sum(os.path.getsize(p) for p in (os.path.join(work, "state", f"opsd.db{x}") for x in ("", "-wal")) if os.path.exists(p))
    return {
        "t": time.monotonic(),
        "rss": int(status["VmRSS"].split()[0]) / 1024,
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
        "threads": int(status["Threads"]),
        "cpu": (int(fields[11]) + int(fields[12])) / TICK,
        "db": db / 2**20,
    }


def slope(points):
    """Least-squares slope of (x, y) points."""
    n = len(points)
    if n < 2:
        return 0.0
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    var = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / var if var else 0.0


def epoch(ts):
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def traffic(stop, group, service_cluster):
    """Lifecycle: the group between 0 and 4 every minute. Capacity: the service between 1 and 5 tasks
    every 3 minutes."""
    n = 0
    while not stop.wait(60):
        n += 1
        asg.set_desired_capacity(AutoScalingGroupName=group, DesiredCapacity=4 if n % 2 else 0)
        if n % 3 == 0:
            ecs.update_service(cluster=service_cluster, service="api", desiredCount=5 if (n // 3) % 2 else 1)


def main():
    if not os.path.exists(OPSD):
        sys.exit(f"bench/soak: no opsd binary at {OPSD}; run bench/soak (it builds one) or set OPSD_BIN")
    tags = []
    for i in range(FLEETS):
        tag = f"soak-{random.randrange(1 << 30):x}-{i}"
        subprocess.run([os.path.join(ROOT, "scripts", "sandbox"), "fleet", str(HOSTS_PER_FLEET), "--tag", f"Soak={tag}"],
                       check=True, capture_output=True)
        tags.append(tag)
    net = 150 + os.getpid() % 40
    group, queue, dlq, subnets = lifecycle_group(net)
    cluster, fleet = capacity_cluster(net + 1)
    extra = (f'\n[lifecycle]\nqueue_url = "{queue}"\nworkers = 16\nvisibility_timeout = "60s"\n'
             f'[lifecycle.eni]\nsubnets = [{", ".join(json.dumps(s) for s in subnets)}]\nready_timeout = "60s"\n'
             f'[capacity]\ncluster = "{cluster}"\nspot_fleet_request_id = "{fleet}"\nmin_capacity = 1\n'
             'max_capacity = 6\ninterval = "5s"\nscale_out_cooldown = "30s"\nscale_in_cooldown = "60s"\n'
             'drain_timeout = "60s"\n')
    work = sandbox_workspace("opsd-soak-", extra)
    write_jobs(os.path.join(work, "jobs"), tags)
    faults(FAULTS)
    env = dict(ENV, OPSD_CONFIG=os.path.join(work, "opsd.toml"), AWS_ACCESS_KEY_ID=KEY, OPSD_LOG="warn")
    log = open(os.path.join(work, "daemon.log"), "w")
    daemon = subprocess.Popen([OPSD, "daemon"], env=env, stdout=log, stderr=subprocess.STDOUT)
    stop = threading.Event()
    mover = threading.Thread(target=traffic, args=(stop, group, cluster), daemon=True)
    mover.start()
    start = time.monotonic()
    samples = []
    while time.monotonic() - start < MINUTES * 60:
        time.sleep(SAMPLE_S)
        if daemon.poll() is not None:
            sys.exit(f"bench/soak: the daemon exited ({daemon.returncode}); see {work}/daemon.log")
        samples.append(sample(daemon.pid, work))
        print(f"soak: {(time.monotonic() - start) / 60:5.1f} min  rss {samples[-1]['rss']:.1f} MiB  "
              f"fds {samples[-1]['fds']}  threads {samples[-1]['threads']}  db {samples[-1]['db']:.1f} MiB",
              file=sys.stderr, flush=True)
    stop.set()
    # Let the last lifecycle and capacity work settle, then a clean stop.
    asg.set_desired_capacity(AutoScalingGroupName=group, DesiredCapacity=0)
    settle = time.monotonic()
    while time.monotonic() - settle < 120:
        a = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
        if a["ApproximateNumberOfMessages"] == "0" and a["ApproximateNumberOfMessagesNotVisible"] == "0" and \
                not asg.describe_auto_scaling_groups(AutoScalingGroupNames=[group])["AutoScalingGroups"][0]["Instances"]:
            break
        time.sleep(2)
    daemon.send_signal(signal.SIGTERM)
    code = daemon.wait(timeout=180)
    seen = injected()
    faults({})
    report(work, samples, start, code, queue, dlq, seen)


def report(work, samples, start, code, queue, dlq, seen):
    db = sqlite3.connect(os.path.join(work, "state", "opsd.db"))
    per_job = {}
    for job, at, outcome in db.execute("SELECT job, scheduled_for, outcome FROM runs WHERE scheduled_for IS NOT NULL"):
        per_job.setdefault(job, []).append((epoch(at), outcome))
    outcomes, missing, doubled, firings = {}, 0, 0, 0
    for job, rows in per_job.items():
        times = sorted(t for t, _ in rows)
        firings += len(times)
        for _, o in rows:
            outcomes[o] = outcomes.get(o, 0) + 1
        doubled += len(times) - len(set(times))
        if times:
            expected = round((times[-1] - times[0]) / PERIOD) + 1
            missing += expected - len(set(times))
    lc = dict(db.execute("SELECT outcome, COUNT(*) FROM lifecycle_actions GROUP BY outcome").fetchall())
    lc_results = dict(db.execute("SELECT result, COUNT(*) FROM lifecycle_actions GROUP BY result").fetchall())
    cap = dict(db.execute("SELECT action || ':' || outcome, COUNT(*) FROM capacity_decisions GROUP BY 1").fetchall())
    depth = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"]
    dlq_depth = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"]
    warm = [s for s in samples if s["t"] - start >= WARMUP_MIN * 60]
    hours = lambda s: (s["t"] - start) / 3600

    def row(key, unit, d=1):
        vals = [s[key] for s in warm]
        return (f"| {key} | {min(vals):.{d}f} | {max(vals):.{d}f} | {vals[-1]:.{d}f} | "
                f"{slope([(hours(s), s[key]) for s in warm]):+.{d}f} {unit}/h |")

    cpu = (samples[-1]["cpu"] - samples[0]["cpu"]) / (samples[-1]["t"] - samples[0]["t"]) if len(samples) > 1 else 0
    print(f"""# bench/soak

`opsd daemon` for {MINUTES:g} minutes: {JOBS} jobs on `@every {PERIOD}s` over {FLEETS} × {HOSTS_PER_FLEET} sandbox hosts,
lifecycle hooks (a group scaled 0 ↔ 4 every minute), a capacity controller (a service 1 ↔ 5 tasks every
3 minutes on a Spot Fleet), and the sandbox's faults for the daemon's key: `{json.dumps(FAULTS)}`.
Binary: `{OPSD}`. Sampled every {SAMPLE_S} s; the table covers the samples after {WARMUP_MIN:g} minutes of
warm-up ({len(warm)} samples; slope by least squares). Daemon CPU: {cpu * 100:.1f} % of a core on average.

| series | min | max | last | slope |
| --- | ---: | ---: | ---: | ---: |
{row("rss", "MiB")}
{row("fds", "fds", 0)}
{row("threads", "threads", 0)}
{row("db", "MiB", 2)}

Firings: {firings} recorded over {len(per_job)} jobs; {missing} missing and {doubled} doubled (per job, from
its first to its last recorded firing at exactly {PERIOD} s apart). Outcomes: {json.dumps(outcomes, sort_keys=True)}.

Lifecycle actions: by outcome {json.dumps(lc, sort_keys=True)}, by result {json.dumps(lc_results, sort_keys=True)};
queue left {depth['ApproximateNumberOfMessages']}, dead-letter queue {dlq_depth['ApproximateNumberOfMessages']}.

Capacity decisions (action:outcome): {json.dumps(cap, sort_keys=True)}.

Faults injected into the daemon's calls (code: count): {json.dumps({k: sum(v.values()) for k, v in seen.items()}, sort_keys=True)}.

Daemon exit status after SIGTERM: {code}.
""")


if __name__ == "__main__":
    main()
