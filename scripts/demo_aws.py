#!/usr/bin/env python3
"""The AWS side of scripts/demo, in the sandbox's moto: what an operator would have built in their
account before installing opsd, and the checks that what the demo narrates really happened.

  demo_aws.py setup DIR          an Auto Scaling group with a launch and a terminate hook to an SQS
                                 queue (and its dead-letter queue), and an ECS cluster on a Spot Fleet
                                 with a service that does not fit; writes DIR/aws.json and prints the
                                 [lifecycle] and [capacity] sections of opsd.toml for them
  demo_aws.py scale DIR N        set the group's desired capacity
  demo_aws.py wait-group DIR N   wait until the group has N instances InService, each with exactly
                                 one secondary interface (device index 1) in its own zone; with N = 0,
                                 until no instance and no interface of opsd's is left
  demo_aws.py wait-tasks DIR     wait until every task of the service runs; prints the fleet's target

Run by scripts/demo with the sandbox's Python (target/sandbox/venv). Exits 1, saying what is missing,
when a wait runs out: the demo then fails.
"""
import argparse
import base64
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sandbox import AMI, boto  # noqa: E402  (the sandbox's own client factory: moto on loopback)

# Networks of their own: the sandbox fleet is 127.0/16, the tests use 127.100/16 and above.
LIFECYCLE_NET = 90
CAPACITY_NET = 91
# One task of 1280 CPU per c5.large (2048 CPU): three tasks need three instances, the fleet has one.
TASK_CPU, TASK_MEM, TASKS = 1280, 1024, 3


def setup(args):
    ec2, asg, sqs, ecs = boto("ec2"), boto("autoscaling"), boto("sqs"), boto("ecs")
    name = f"demo-{int(time.time())}"

    # Lifecycle: a VPC with a subnet per zone, a queue with a dead-letter queue, a group, two hooks.
    vpc = ec2.create_vpc(CidrBlock=f"127.{LIFECYCLE_NET}.0.0/16")["Vpc"]["VpcId"]
    subnets = []
    for i, zone in enumerate(["us-east-1a", "us-east-1b"]):
        sn = ec2.create_subnet(VpcId=vpc, CidrBlock=f"127.{LIFECYCLE_NET}.{i + 1}.0/24", AvailabilityZone=zone)
        subnets.append({"id": sn["Subnet"]["SubnetId"], "zone": zone})
    dlq = sqs.create_queue(QueueName=f"{name}-hooks-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    queue = sqs.create_queue(
        QueueName=f"{name}-hooks",
        Attributes={"RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "5"})},
    )["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    asg.create_launch_configuration(LaunchConfigurationName=f"{name}-lc", ImageId=AMI, InstanceType="t3.micro")
    group = f"{name}-web"
    asg.create_auto_scaling_group(
        AutoScalingGroupName=group, LaunchConfigurationName=f"{name}-lc", MinSize=0, MaxSize=4,
        DesiredCapacity=0, VPCZoneIdentifier=",".join(s["id"] for s in subnets),
    )
    for hook, transition in [("launch", "autoscaling:EC2_INSTANCE_LAUNCHING"),
                             ("terminate", "autoscaling:EC2_INSTANCE_TERMINATING")]:
        asg.put_lifecycle_hook(
            AutoScalingGroupName=group, LifecycleHookName=hook, LifecycleTransition=transition,
            HeartbeatTimeout=60, DefaultResult="ABANDON", NotificationTargetARN=queue_arn,
            RoleARN="arn:aws:iam::123456789012:role/opsd-hooks",
        )

    # Capacity: a cluster, a Spot Fleet of one c5.large whose instances join it, a service of three.
    cvpc = ec2.create_vpc(CidrBlock=f"127.{CAPACITY_NET}.0.0/16")["Vpc"]["VpcId"]
    csubnet = ec2.create_subnet(VpcId=cvpc, CidrBlock=f"127.{CAPACITY_NET}.1.0/24")["Subnet"]["SubnetId"]
    cluster = f"{name}-ecs"
    ecs.create_cluster(clusterName=cluster)
    user_data = base64.b64encode(f"#!/bin/bash\necho ECS_CLUSTER={cluster} >> /etc/ecs/ecs.config\n".encode())
    fleet = ec2.request_spot_fleet(SpotFleetRequestConfig={
        "TargetCapacity": 1, "IamFleetRole": "arn:aws:iam::123456789012:role/fleet", "Type": "maintain",
        "AllocationStrategy": "lowestPrice",
        "LaunchSpecifications": [{"ImageId": AMI, "InstanceType": "c5.large", "SubnetId": csubnet,
                                  "UserData": user_data.decode(), "WeightedCapacity": 1.0}],
    })["SpotFleetRequestId"]
    td = ecs.register_task_definition(family=f"{name}-api", containerDefinitions=[
        {"name": "api", "image": "busybox", "cpu": TASK_CPU, "memory": TASK_MEM}])
    ecs.create_service(cluster=cluster, serviceName="api", desiredCount=TASKS,
                       taskDefinition=td["taskDefinition"]["taskDefinitionArn"])

    state = {"group": group, "subnets": subnets, "queue": queue, "dlq": dlq, "cluster": cluster,
             "fleet": fleet, "service": "api"}
    with open(os.path.join(args.dir, "aws.json"), "w") as f:
        json.dump(state, f, indent=1)
    print(f"""[lifecycle]
queue_url = "{queue}"
visibility_timeout = "30s"

[lifecycle.eni]
subnets = [{", ".join(json.dumps(s["id"]) for s in subnets)}]

[capacity]
cluster = "{cluster}"
spot_fleet_request_id = "{fleet}"
target_reservation = 80
min_capacity = 1
max_capacity = 4
interval = "2s"
scale_out_cooldown = "30s"
scale_in_cooldown = "5m"
""")
    log(f"Auto Scaling group {group} (0 instances) with hooks 'launch' and 'terminate' to {queue}")
    log(f"ECS cluster {cluster} on Spot Fleet {fleet} (1 x c5.large); service 'api' wants {TASKS} tasks "
        f"of {TASK_CPU} CPU: one fits")


def load(d):
    with open(os.path.join(d, "aws.json")) as f:
        return json.load(f)


def log(msg):
    print(f"    {msg}", file=sys.stderr)


def scale(args):
    st = load(args.dir)
    boto("autoscaling").set_desired_capacity(AutoScalingGroupName=st["group"], DesiredCapacity=args.n)
    log(f"set the desired capacity of {st['group']} to {args.n}")


def group_view(st):
    """(instances {id: (state, zone)}, interfaces [(id, status, instance, device index, subnet)])."""
    asg, ec2 = boto("autoscaling"), boto("ec2")
    g = asg.describe_auto_scaling_groups(AutoScalingGroupNames=[st["group"]])["AutoScalingGroups"][0]
    instances = {i["InstanceId"]: (i["LifecycleState"], i["AvailabilityZone"]) for i in g["Instances"]}
    enis = ec2.describe_network_interfaces(
        Filters=[{"Name": "subnet-id", "Values": [s["id"] for s in st["subnets"]]}])["NetworkInterfaces"]
    views = []
    for e in enis:
        a = e.get("Attachment") or {}
        if a.get("DeviceIndex") == 0:
            continue  # an instance's own primary interface, not opsd's
        views.append((e["NetworkInterfaceId"], e["Status"], a.get("InstanceId"), a.get("DeviceIndex"), e["SubnetId"]))
    return instances, views


def wait_group(args):
    st = load(args.dir)
    zone_subnet = {s["zone"]: s["id"] for s in st["subnets"]}
    deadline = time.monotonic() + args.timeout
    while True:
        instances, enis = group_view(st)
        problems = []
        if len(instances) != args.n:
            problems.append(f"{len(instances)} instances, not {args.n}")
        for iid, (state, zone) in sorted(instances.items()):
            mine = [e for e in enis if e[2] == iid]
            if state != "InService":
                problems.append(f"{iid} is {state}")
            elif len(mine) != 1 or mine[0][3] != 1 or mine[0][4] != zone_subnet[zone]:
                problems.append(f"{iid} has interfaces {mine}, not one at device index 1 in {zone}")
        if args.n == 0 and enis:
            problems.append(f"interfaces left: {[e[0] for e in enis]}")
        if not problems:
            for iid, (state, zone) in sorted(instances.items()):
                eni = next(e for e in enis if e[2] == iid)
                log(f"{iid} {state} in {zone}, {eni[0]} at device index 1 in {eni[4]}")
            if args.n == 0:
                log(f"{st['group']} has no instance and no secondary interface is left")
            return
        if time.monotonic() > deadline:
            sys.exit(f"demo: after {args.timeout} s: " + "; ".join(problems))
        time.sleep(0.5)


def wait_tasks(args):
    st = load(args.dir)
    ecs, ec2 = boto("ecs"), boto("ec2")
    deadline = time.monotonic() + args.timeout
    while True:
        svc = ecs.describe_services(cluster=st["cluster"], services=[st["service"]])["services"][0]
        running, desired = svc["runningCount"], svc["desiredCount"]
        if running == desired:
            cfg = ec2.describe_spot_fleet_requests(SpotFleetRequestIds=[st["fleet"]])["SpotFleetRequestConfigs"][0]
            target = cfg["SpotFleetRequestConfig"]["TargetCapacity"]
            log(f"service {st['service']}: {running} of {desired} tasks running; the fleet's target capacity is {target}")
            return
        if time.monotonic() > deadline:
            sys.exit(f"demo: after {args.timeout} s the service {st['service']} runs {running} of {desired} tasks")
        time.sleep(0.5)


def main():
    p = argparse.ArgumentParser(prog="scripts/demo_aws.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("setup")
    s.add_argument("dir")
    s.set_defaults(f=setup)
    s = sub.add_parser("scale")
    s.add_argument("dir")
    s.add_argument("n", type=int)
    s.set_defaults(f=scale)
    s = sub.add_parser("wait-group")
    s.add_argument("dir")
    s.add_argument("n", type=int)
    s.add_argument("--timeout", type=float, default=60)
    s.set_defaults(f=wait_group)
    s = sub.add_parser("wait-tasks")
    s.add_argument("dir")
    s.add_argument("--timeout", type=float, default=60)
    s.set_defaults(f=wait_tasks)
    args = p.parse_args()
    args.f(args)


if __name__ == "__main__":
    main()
