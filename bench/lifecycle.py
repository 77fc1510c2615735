#!/usr/bin/env python3
"""bench/lifecycle: how fast `opsd daemon` drains a queue of N launch notifications with 16 workers,
and how much of each action is opsd's own work beyond the AWS calls (the store's timings: each
action's started_at/ended_at and aws_ms, the time its AWS calls were in flight).

Against the sandbox's moto (loopback only), emptied before each N (`scripts/sandbox reset`). For each
N: a fresh group with a launch hook on a fresh queue; the N instances are launched first (they wait in Pending:Wait, notifications queued), then
the daemon starts and the clock runs until N launches are recorded completed and the queue is
empty. Run through bench/lifecycle (uses target/release/opsd and the sandbox's venv for boto3).
"""
import json
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import time

import boto3

from sandbox_common import ROOT, sandbox_env, workspace as sandbox_workspace

OPSD = os.environ.get("OPSD_BIN") or os.path.join(ROOT, "target", "release", "opsd")
TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
WORKERS = 16


ENV = sandbox_env()


def client(service):
    return boto3.client(service, endpoint_url=ENV["AWS_ENDPOINT_URL"], region_name=ENV["AWS_REGION"],
                        aws_access_key_id=ENV["AWS_ACCESS_KEY_ID"], aws_secret_access_key=ENV["AWS_SECRET_ACCESS_KEY"])


ec2, asg, sqs = client("ec2"), client("autoscaling"), client("sqs")


def group(n, net):
    """A group of n instances waiting in Pending:Wait, its launch hook on its own queue."""
    name = f"bench-lifecycle-{n}-{net}-{random.randrange(1 << 30):x}"
    vpc = ec2.create_vpc(CidrBlock=f"127.{net}.0.0/16")["Vpc"]["VpcId"]
    subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=f"127.{net}.{16 * i}.0/20", AvailabilityZone=z)["Subnet"]["SubnetId"]
               for i, z in enumerate(["us-east-1a", "us-east-1b"])]
    dlq = sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    queue = sqs.create_queue(QueueName=name, Attributes={
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "5"})})["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    asg.create_launch_configuration(LaunchConfigurationName=f"{name}-lc", ImageId="ami-760aaa0f", InstanceType="t3.micro")
    asg.create_auto_scaling_group(AutoScalingGroupName=name, LaunchConfigurationName=f"{name}-lc", MinSize=0,
                                  MaxSize=n, DesiredCapacity=0, VPCZoneIdentifier=",".join(subnets))
    asg.put_lifecycle_hook(AutoScalingGroupName=name, LifecycleHookName="launch",
                           LifecycleTransition="autoscaling:EC2_INSTANCE_LAUNCHING", HeartbeatTimeout=7200,
                           DefaultResult="ABANDON", NotificationTargetARN=arn,
                           RoleARN="arn:aws:iam::123456789012:role/opsd-hooks")
    t = time.monotonic()
    asg.set_desired_capacity(AutoScalingGroupName=name, DesiredCapacity=n)
    return name, queue, subnets, time.monotonic() - t


def depth(queue):
    a = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=[
        "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
    return int(a["ApproximateNumberOfMessages"]), int(a["ApproximateNumberOfMessagesNotVisible"])


def workspace(queue, subnets):
    work = sandbox_workspace("opsd-lifecycle-bench-", (
        f'\n[lifecycle]\nqueue_url = "{queue}"\nworkers = {WORKERS}\nvisibility_timeout = "60s"\n'
        f'[lifecycle.eni]\nsubnets = [{", ".join(json.dumps(s) for s in subnets)}]\nready_timeout = "30s"\n'))
    return work, os.path.join(work, "opsd.toml")


def proc(pid):
    with open(f"/proc/{pid}/stat") as f:
        s = f.read()
    fields = s[s.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / TICK, int(fields[21]) * PAGE / 2**20


def completed(work):
    """The completed launches in the daemon's store, read directly (cheaper than `opsd lifecycle
    status`, which would compete with the daemon and moto for the 2 cores while it drains)."""
    path = os.path.join(work, "state", "opsd.db")
    if not os.path.exists(path):
        return []
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        rows = db.execute("SELECT started_at, ended_at, aws_ms FROM lifecycle_actions "
                          "WHERE transition = 'launch' AND outcome = 'completed'").fetchall()
    except sqlite3.OperationalError:  # the schema is not there yet
        rows = []
    db.close()
    return [{"started_at": a, "ended_at": b, "aws_ms": c} for a, b, c in rows]


def ms(a, k):
    from datetime import datetime
    return datetime.fromisoformat(a[k].replace("Z", "+00:00")).timestamp() * 1000


def drain(n, net):
    # moto's calls slow down with everything it holds (earlier benchmarks' instances included):
    # every size starts from an empty AWS.
    subprocess.run([os.path.join(ROOT, "scripts", "sandbox"), "reset"], check=True, capture_output=True)
    name, queue, subnets, launch_s = group(n, net)
    work, cfg = workspace(queue, subnets)
    log = open(os.path.join(work, "daemon.log"), "w")
    start = time.monotonic()
    p = subprocess.Popen([OPSD, "daemon"], env=dict(ENV, OPSD_CONFIG=cfg), stdout=log, stderr=subprocess.STDOUT)
    peak = 0.0
    done = []
    while True:
        cpu, rss = proc(p.pid)
        peak = max(peak, rss)
        done = completed(work)
        # The queue is asked only once every launch is recorded (a message is deleted before its
        # action is recorded, so this is at most one poll late).
        if len(done) >= n and depth(queue) == (0, 0):
            break
        if time.monotonic() - start > 600 or p.poll() is not None:
            sys.exit(f"bench: {len(done)} of {n} launches completed after {time.monotonic() - start:.0f}s; see {work}/daemon.log")
        time.sleep(0.25)
    wall = time.monotonic() - start
    cpu, _ = proc(p.pid)
    p.terminate()
    p.wait(60)
    # From the first action's start to the last one's end, on the store's clock (the daemon's start-up
    # and this loop's polling are outside it).
    first = min(ms(a, "started_at") for a in done)
    last = max(ms(a, "ended_at") for a in done)
    took = [ms(a, "ended_at") - ms(a, "started_at") for a in done]
    own = [t - a["aws_ms"] for t, a in zip(took, done)]
    return {
        "n": n, "launch_s": launch_s, "wall": wall, "span": (last - first) / 1000, "cpu": cpu, "rss": peak,
        "took_med": statistics.median(took), "aws_med": statistics.median(a["aws_ms"] for a in done),
        "own_med": statistics.median(own), "own_p95": sorted(own)[int(0.95 * (len(own) - 1))],
        "own_mean": statistics.mean(own),
    }


def main():
    sizes = [int(x) for x in (sys.argv[1] if len(sys.argv) > 1 else "100,500").split(",")]
    rows = [drain(n, 220 + i + random.randrange(10) * len(sizes)) for i, n in enumerate(sizes)]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    print(f"<!-- written by bench/lifecycle on {time.strftime('%Y-%m-%d', time.gmtime())}, commit {commit}, "
          f"{os.cpu_count()} cores, moto in the sandbox -->")
    print(f"| launches | workers | drain: start to empty queue | first action to last | per launch | "
          f"daemon CPU | CPU per launch | peak RSS | action (median) | AWS calls in it (median) | "
          f"opsd's own (median / p95 / mean) |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['n']} | {WORKERS} | {r['wall']:.1f} s | {r['span']:.1f} s | {1000 * r['span'] / r['n']:.0f} ms | "
              f"{r['cpu']:.2f} s | {1000 * r['cpu'] / r['n']:.1f} ms | {r['rss']:.0f} MiB | {r['took_med']:.0f} ms | "
              f"{r['aws_med']:.0f} ms | {r['own_med']:.1f} / {r['own_p95']:.1f} / {r['own_mean']:.1f} ms |")


if __name__ == "__main__":
    main()
