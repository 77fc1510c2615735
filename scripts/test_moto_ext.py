#!/usr/bin/env python3
"""Tests of scripts/moto_ext against the running sandbox moto, and of scripts/ddb_proxy.py in front
of DynamoDB Local (boto3, as a client of AWS would).

Run by scripts/test after `scripts/sandbox up`:  target/sandbox/venv/bin/python scripts/test_moto_ext.py
Each test works in a VPC of its own (127.<n>.0.0/16: addresses that are loopback if anything ever
used them) so it leaves the sandbox's fleet alone.
"""
import base64
import itertools
import json
import os
import time
import unittest
import uuid

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

ENDPOINT = os.environ["AWS_ENDPOINT_URL"]
REGION = os.environ.get("AWS_REGION", "us-east-1")
CFG = Config(retries={"max_attempts": 1})
_net = itertools.count(200 + os.getpid() % 20)


def client(name):
    return boto3.client(name, endpoint_url=ENDPOINT, region_name=REGION, config=CFG)


ec2, asg, sqs, ecs = client("ec2"), client("autoscaling"), client("sqs"), client("ecs")


def network(zones=("us-east-1a", "us-east-1b")):
    """A VPC with one /24 subnet per zone."""
    n = next(_net)
    vpc = ec2.create_vpc(CidrBlock=f"127.{n}.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"127.{n}.{i + 1}.0/24", AvailabilityZone=z)["Subnet"]["SubnetId"]
        for i, z in enumerate(zones)
    ]
    return vpc, subnets


def queue():
    url = sqs.create_queue(QueueName=f"lc-{uuid.uuid4().hex[:12]}")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return url, arn


def receive(url, n, timeout=10):
    """n message bodies (parsed), deleting them."""
    out, end = [], time.time() + timeout
    while len(out) < n and time.time() < end:
        r = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        for m in r.get("Messages", []):
            out.append(json.loads(m["Body"]))
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    return out


def states(group):
    g = asg.describe_auto_scaling_groups(AutoScalingGroupNames=[group])["AutoScalingGroups"][0]
    return {i["InstanceId"]: i["LifecycleState"] for i in g["Instances"]}


def wait(what, cond, timeout=10):
    end = time.time() + timeout
    while time.time() < end:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


class Eni(unittest.TestCase):
    def setUp(self):
        self.vpc, self.subnets = network()

    def test_client_token_makes_creation_idempotent(self):
        token = uuid.uuid4().hex
        a = ec2.create_network_interface(SubnetId=self.subnets[0], ClientToken=token)["NetworkInterface"]
        b = ec2.create_network_interface(SubnetId=self.subnets[0], ClientToken=token)["NetworkInterface"]
        self.assertEqual(a["NetworkInterfaceId"], b["NetworkInterfaceId"])
        with self.assertRaises(ClientError) as e:
            ec2.create_network_interface(SubnetId=self.subnets[1], ClientToken=token)
        self.assertEqual(e.exception.response["Error"]["Code"], "IdempotentParameterMismatch")
        c = ec2.create_network_interface(SubnetId=self.subnets[0], ClientToken=uuid.uuid4().hex)["NetworkInterface"]
        self.assertNotEqual(a["NetworkInterfaceId"], c["NetworkInterfaceId"])

    def test_addresses_never_collide(self):
        ips = [ec2.create_network_interface(SubnetId=self.subnets[0])["NetworkInterface"]["PrivateIpAddress"] for _ in range(40)]
        self.assertEqual(len(set(ips)), 40)
        self.assertTrue(all(ip.split(".")[3] not in ("0", "1", "2", "3") for ip in ips), ips)

    def test_attach_and_delete_refusals_and_detach_on_termination(self):
        inst = ec2.run_instances(ImageId="ami-760aaa0f", MinCount=1, MaxCount=1, SubnetId=self.subnets[0])["Instances"][0]["InstanceId"]
        a = ec2.create_network_interface(SubnetId=self.subnets[0])["NetworkInterface"]["NetworkInterfaceId"]
        b = ec2.create_network_interface(SubnetId=self.subnets[0])["NetworkInterface"]["NetworkInterfaceId"]
        ec2.attach_network_interface(NetworkInterfaceId=a, InstanceId=inst, DeviceIndex=1)
        with self.assertRaises(ClientError) as e:
            ec2.attach_network_interface(NetworkInterfaceId=b, InstanceId=inst, DeviceIndex=1)
        self.assertEqual(e.exception.response["Error"]["Code"], "InvalidParameterValue")
        with self.assertRaises(ClientError) as e:
            ec2.attach_network_interface(NetworkInterfaceId=a, InstanceId=inst, DeviceIndex=2)
        self.assertEqual(e.exception.response["Error"]["Code"], "InvalidNetworkInterface.InUse")
        with self.assertRaises(ClientError) as e:
            ec2.delete_network_interface(NetworkInterfaceId=a)
        self.assertEqual(e.exception.response["Error"]["Code"], "InvalidNetworkInterface.InUse")
        found = ec2.describe_network_interfaces(
            Filters=[{"Name": "attachment.instance-id", "Values": [inst]}, {"Name": "attachment.device-index", "Values": ["1"]}]
        )["NetworkInterfaces"]
        self.assertEqual([n["NetworkInterfaceId"] for n in found], [a])
        ec2.terminate_instances(InstanceIds=[inst])
        eni = ec2.describe_network_interfaces(NetworkInterfaceIds=[a])["NetworkInterfaces"][0]
        self.assertEqual(eni["Status"], "available")
        ec2.delete_network_interface(NetworkInterfaceId=a)

    def test_a_token_reused_after_deletion_returns_the_deleted_interface(self):
        token = uuid.uuid4().hex
        a = ec2.create_network_interface(SubnetId=self.subnets[0], ClientToken=token)["NetworkInterface"]["NetworkInterfaceId"]
        ec2.delete_network_interface(NetworkInterfaceId=a)
        b = ec2.create_network_interface(SubnetId=self.subnets[0], ClientToken=token)["NetworkInterface"]["NetworkInterfaceId"]
        self.assertEqual(a, b)
        with self.assertRaises(ClientError) as e:
            ec2.describe_network_interfaces(NetworkInterfaceIds=[b])
        self.assertEqual(e.exception.response["Error"]["Code"], "InvalidNetworkInterfaceID.NotFound")

    def test_attach_refuses_another_zone_the_type_limit_and_a_terminated_instance(self):
        inst = ec2.run_instances(ImageId="ami-760aaa0f", MinCount=1, MaxCount=1, InstanceType="t3.micro",
                                 SubnetId=self.subnets[0])["Instances"][0]["InstanceId"]
        other_zone = ec2.create_network_interface(SubnetId=self.subnets[1])["NetworkInterface"]["NetworkInterfaceId"]
        with self.assertRaises(ClientError) as e:
            ec2.attach_network_interface(NetworkInterfaceId=other_zone, InstanceId=inst, DeviceIndex=1)
        self.assertEqual(e.exception.response["Error"]["Code"], "InvalidParameterCombination")
        # t3.micro: two interfaces, the primary and one more.
        a = ec2.create_network_interface(SubnetId=self.subnets[0])["NetworkInterface"]["NetworkInterfaceId"]
        b = ec2.create_network_interface(SubnetId=self.subnets[0])["NetworkInterface"]["NetworkInterfaceId"]
        ec2.attach_network_interface(NetworkInterfaceId=a, InstanceId=inst, DeviceIndex=1)
        with self.assertRaises(ClientError) as e:
            ec2.attach_network_interface(NetworkInterfaceId=b, InstanceId=inst, DeviceIndex=2)
        self.assertEqual(e.exception.response["Error"]["Code"], "AttachmentLimitExceeded")
        ec2.terminate_instances(InstanceIds=[inst])
        with self.assertRaises(ClientError) as e:
            ec2.attach_network_interface(NetworkInterfaceId=b, InstanceId=inst, DeviceIndex=1)
        self.assertEqual(e.exception.response["Error"]["Code"], "IncorrectInstanceState")

    def test_attach_and_detach_take_time_in_tagged_subnets(self):
        ec2.create_tags(Resources=[self.subnets[0]], Tags=[{"Key": "moto:eni-attach-seconds", "Value": "1"},
                                                           {"Key": "moto:eni-detach-seconds", "Value": "1.5"}])
        inst = ec2.run_instances(ImageId="ami-760aaa0f", MinCount=1, MaxCount=1, SubnetId=self.subnets[0])["Instances"][0]["InstanceId"]
        a = ec2.create_network_interface(SubnetId=self.subnets[0])["NetworkInterface"]["NetworkInterfaceId"]
        att = ec2.attach_network_interface(NetworkInterfaceId=a, InstanceId=inst, DeviceIndex=1)["AttachmentId"]
        view = lambda: ec2.describe_network_interfaces(NetworkInterfaceIds=[a])["NetworkInterfaces"][0]
        self.assertEqual((view()["Status"], view()["Attachment"]["Status"]), ("in-use", "attaching"))
        wait("attached", lambda: view()["Attachment"]["Status"] == "attached", 5)
        ec2.detach_network_interface(AttachmentId=att)
        self.assertEqual((view()["Status"], view()["Attachment"]["Status"]), ("in-use", "detaching"))
        with self.assertRaises(ClientError) as e:
            ec2.delete_network_interface(NetworkInterfaceId=a)
        self.assertEqual(e.exception.response["Error"]["Code"], "InvalidNetworkInterface.InUse")
        wait("available", lambda: view()["Status"] == "available", 5)
        self.assertNotIn("Attachment", view())
        ec2.delete_network_interface(NetworkInterfaceId=a)
        ec2.terminate_instances(InstanceIds=[inst])

    def test_instances_stay_pending_in_tagged_subnets_and_take_no_interface_then(self):
        ec2.create_tags(Resources=[self.subnets[0]], Tags=[{"Key": "moto:instance-pending-seconds", "Value": "1.5"}])
        inst = ec2.run_instances(ImageId="ami-760aaa0f", MinCount=1, MaxCount=1, SubnetId=self.subnets[0])["Instances"][0]["InstanceId"]
        state = lambda: ec2.describe_instances(InstanceIds=[inst])["Reservations"][0]["Instances"][0]["State"]
        self.assertEqual(state(), {"Code": 0, "Name": "pending"})
        a = ec2.create_network_interface(SubnetId=self.subnets[0])["NetworkInterface"]["NetworkInterfaceId"]
        with self.assertRaises(ClientError) as e:
            ec2.attach_network_interface(NetworkInterfaceId=a, InstanceId=inst, DeviceIndex=1)
        self.assertEqual(e.exception.response["Error"]["Code"], "IncorrectInstanceState")
        wait("running", lambda: state()["Name"] == "running", 5)
        ec2.attach_network_interface(NetworkInterfaceId=a, InstanceId=inst, DeviceIndex=1)
        ec2.terminate_instances(InstanceIds=[inst])

    def test_pending_subnet_tag(self):
        ec2.create_tags(Resources=[self.subnets[1]], Tags=[{"Key": "moto:eni-pending-seconds", "Value": "1.5"}])
        eni = ec2.create_network_interface(SubnetId=self.subnets[1])["NetworkInterface"]
        self.assertEqual(eni["Status"], "pending")
        status = lambda: ec2.describe_network_interfaces(NetworkInterfaceIds=[eni["NetworkInterfaceId"]])["NetworkInterfaces"][0]["Status"]
        self.assertEqual(status(), "pending")
        wait("available", lambda: status() == "available", 5)
        plain = ec2.create_network_interface(SubnetId=self.subnets[0])["NetworkInterface"]
        self.assertEqual(plain["Status"], "available")


class Lifecycle(unittest.TestCase):
    def setUp(self):
        self.vpc, self.subnets = network()
        self.url, self.arn = queue()
        self.group = f"g-{uuid.uuid4().hex[:10]}"
        lc = f"lc-{uuid.uuid4().hex[:10]}"
        asg.create_launch_configuration(LaunchConfigurationName=lc, ImageId="ami-760aaa0f", InstanceType="t3.micro")
        asg.create_auto_scaling_group(
            AutoScalingGroupName=self.group,
            LaunchConfigurationName=lc,
            MinSize=0,
            MaxSize=10,
            DesiredCapacity=0,
            VPCZoneIdentifier=",".join(self.subnets),
            Tags=[{"Key": "moto:time-scale", "Value": "0.05", "PropagateAtLaunch": False}],
        )

    def tearDown(self):
        asg.update_auto_scaling_group(AutoScalingGroupName=self.group, MinSize=0, DesiredCapacity=0)
        for hook in asg.describe_lifecycle_hooks(AutoScalingGroupName=self.group)["LifecycleHooks"]:
            asg.delete_lifecycle_hook(AutoScalingGroupName=self.group, LifecycleHookName=hook["LifecycleHookName"])

    def hook(self, name, transition, timeout=60, result="ABANDON", metadata=None):
        args = dict(
            AutoScalingGroupName=self.group,
            LifecycleHookName=name,
            LifecycleTransition=transition,
            HeartbeatTimeout=timeout,
            DefaultResult=result,
            NotificationTargetARN=self.arn,
            RoleARN="arn:aws:iam::123456789012:role/hooks",
        )
        if metadata is not None:
            args["NotificationMetadata"] = metadata
        asg.put_lifecycle_hook(**args)

    def test_hook_is_stored_validated_and_tested(self):
        with self.assertRaises(ClientError):
            self.hook("h", "autoscaling:EC2_INSTANCE_LAUNCHING", timeout=29)
        self.hook("h", "autoscaling:EC2_INSTANCE_LAUNCHING", metadata='{"SubnetId": "subnet-1"}')
        h = asg.describe_lifecycle_hooks(AutoScalingGroupName=self.group)["LifecycleHooks"][0]
        self.assertEqual(h["NotificationTargetARN"], self.arn)
        self.assertEqual(h["NotificationMetadata"], '{"SubnetId": "subnet-1"}')
        self.assertEqual(h["HeartbeatTimeout"], 3)  # 60 s at the group's time scale 0.05
        test = receive(self.url, 1)
        self.assertEqual(test[0]["Event"], "autoscaling:TEST_NOTIFICATION")
        self.assertEqual(test[0]["AutoScalingGroupName"], self.group)

    def test_launch_wait_continue_abandon_heartbeat_and_timeout(self):
        self.hook("launch", "autoscaling:EC2_INSTANCE_LAUNCHING", metadata='{"x": 1}')
        receive(self.url, 1)  # the test notification
        asg.set_desired_capacity(AutoScalingGroupName=self.group, DesiredCapacity=3)
        notes = receive(self.url, 3)
        self.assertEqual(len(notes), 3)
        for n in notes:
            self.assertEqual(n["LifecycleTransition"], "autoscaling:EC2_INSTANCE_LAUNCHING")
            self.assertEqual((n["Origin"], n["Destination"]), ("EC2", "AutoScalingGroup"))
            self.assertEqual(n["NotificationMetadata"], '{"x": 1}')
        self.assertEqual(set(states(self.group).values()), {"Pending:Wait"})
        # Spread over both subnets, each instance in its subnet's zone.
        ids = [n["EC2InstanceId"] for n in notes]
        insts = [i for r in ec2.describe_instances(InstanceIds=ids)["Reservations"] for i in r["Instances"]]
        self.assertEqual({i["SubnetId"] for i in insts}, set(self.subnets))
        zone_of = {s["SubnetId"]: s["AvailabilityZone"] for s in ec2.describe_subnets(SubnetIds=self.subnets)["Subnets"]}
        self.assertTrue(all(zone_of[i["SubnetId"]] == i["Placement"]["AvailabilityZone"] for i in insts))

        a, b, c = notes
        asg.complete_lifecycle_action(
            AutoScalingGroupName=self.group, LifecycleHookName="launch",
            LifecycleActionToken=a["LifecycleActionToken"], LifecycleActionResult="CONTINUE")
        self.assertEqual(states(self.group)[a["EC2InstanceId"]], "InService")
        with self.assertRaises(ClientError) as e:
            asg.complete_lifecycle_action(
                AutoScalingGroupName=self.group, LifecycleHookName="launch",
                LifecycleActionToken=a["LifecycleActionToken"], LifecycleActionResult="CONTINUE")
        self.assertIn("No active Lifecycle Action found with token", e.exception.response["Error"]["Message"])

        # b is kept waiting by heartbeats well past its 3 s timeout; c gets none and times out (ABANDON).
        start = time.time()
        while time.time() - start < 5:
            asg.record_lifecycle_action_heartbeat(
                AutoScalingGroupName=self.group, LifecycleHookName="launch", InstanceId=b["EC2InstanceId"])
            time.sleep(1)
        s = states(self.group)
        self.assertEqual(s[b["EC2InstanceId"]], "Pending:Wait")
        self.assertNotIn(c["EC2InstanceId"], s)
        term = ec2.describe_instances(InstanceIds=[c["EC2InstanceId"]])["Reservations"][0]["Instances"][0]
        self.assertEqual(term["State"]["Name"], "terminated")
        # The group launched a replacement for c, which waits on the hook in turn.
        replacement = receive(self.url, 1)
        self.assertEqual(len(replacement), 1)
        self.assertNotIn(replacement[0]["EC2InstanceId"], ids)

        asg.complete_lifecycle_action(
            AutoScalingGroupName=self.group, LifecycleHookName="launch",
            InstanceId=b["EC2InstanceId"], LifecycleActionResult="ABANDON")
        self.assertNotIn(b["EC2InstanceId"], states(self.group))

    def test_heartbeat_error_switch(self):
        self.hook("launch", "autoscaling:EC2_INSTANCE_LAUNCHING")
        receive(self.url, 1)
        asg.set_desired_capacity(AutoScalingGroupName=self.group, DesiredCapacity=1)
        note = receive(self.url, 1)[0]
        beat = dict(AutoScalingGroupName=self.group, LifecycleHookName="launch",
                    LifecycleActionToken=note["LifecycleActionToken"])
        asg.record_lifecycle_action_heartbeat(**beat)
        asg.create_or_update_tags(Tags=[{"ResourceId": self.group, "ResourceType": "auto-scaling-group",
                                         "Key": "moto:heartbeat-error", "Value": "AccessDenied",
                                         "PropagateAtLaunch": False}])
        with self.assertRaises(ClientError) as e:
            asg.record_lifecycle_action_heartbeat(**beat)
        self.assertEqual(e.exception.response["Error"]["Code"], "AccessDenied")
        self.assertIn("is not authorized to perform: autoscaling:RecordLifecycleActionHeartbeat",
                      e.exception.response["Error"]["Message"])
        # Completion is not affected by the heartbeat's switch; it has one of its own.
        asg.create_or_update_tags(Tags=[{"ResourceId": self.group, "ResourceType": "auto-scaling-group",
                                         "Key": "moto:complete-error", "Value": "AccessDenied",
                                         "PropagateAtLaunch": False}])
        with self.assertRaises(ClientError) as e:
            asg.complete_lifecycle_action(LifecycleActionResult="CONTINUE", **beat)
        self.assertIn("is not authorized to perform: autoscaling:CompleteLifecycleAction",
                      e.exception.response["Error"]["Message"])
        self.assertEqual(states(self.group)[note["EC2InstanceId"]], "Pending:Wait")
        asg.delete_tags(Tags=[{"ResourceId": self.group, "ResourceType": "auto-scaling-group", "Key": "moto:complete-error"}])
        asg.complete_lifecycle_action(LifecycleActionResult="CONTINUE", **beat)

    def test_terminate_wait(self):
        asg.set_desired_capacity(AutoScalingGroupName=self.group, DesiredCapacity=2)
        self.assertEqual(set(states(self.group).values()), {"InService"})
        self.hook("term", "autoscaling:EC2_INSTANCE_TERMINATING", result="CONTINUE")
        receive(self.url, 1)
        asg.set_desired_capacity(AutoScalingGroupName=self.group, DesiredCapacity=0)
        notes = receive(self.url, 2)
        self.assertEqual({n["LifecycleTransition"] for n in notes}, {"autoscaling:EC2_INSTANCE_TERMINATING"})
        self.assertEqual(set(states(self.group).values()), {"Terminating:Wait"})
        asg.complete_lifecycle_action(
            AutoScalingGroupName=self.group, LifecycleHookName="term",
            LifecycleActionToken=notes[0]["LifecycleActionToken"], LifecycleActionResult="CONTINUE")
        self.assertEqual(list(states(self.group)), [notes[1]["EC2InstanceId"]])
        # The other times out (3 s): its DefaultResult terminates it too.
        wait("the second instance to go", lambda: not states(self.group), 8)

    def test_terminate_instance_in_group_goes_through_the_hook(self):
        asg.set_desired_capacity(AutoScalingGroupName=self.group, DesiredCapacity=2)
        self.hook("term", "autoscaling:EC2_INSTANCE_TERMINATING", timeout=600, result="CONTINUE")
        receive(self.url, 1)
        victim, keep = sorted(states(self.group))
        asg.terminate_instance_in_auto_scaling_group(InstanceId=victim, ShouldDecrementDesiredCapacity=True)
        self.assertEqual(states(self.group), {victim: "Terminating:Wait", keep: "InService"})
        self.assertEqual(ec2.describe_instances(InstanceIds=[victim])["Reservations"][0]["Instances"][0]["State"]["Name"], "running")
        [note] = receive(self.url, 1)
        self.assertEqual((note["LifecycleTransition"], note["EC2InstanceId"]), ("autoscaling:EC2_INSTANCE_TERMINATING", victim))
        g = asg.describe_auto_scaling_groups(AutoScalingGroupNames=[self.group])["AutoScalingGroups"][0]
        self.assertEqual(g["DesiredCapacity"], 1)
        # Without the decrement, the group launches a replacement while the instance waits.
        asg.terminate_instance_in_auto_scaling_group(InstanceId=keep, ShouldDecrementDesiredCapacity=False)
        now = states(self.group)
        self.assertEqual(now[keep], "Terminating:Wait")
        self.assertEqual(len([s for s in now.values() if s == "InService"]), 1)
        asg.complete_lifecycle_action(AutoScalingGroupName=self.group, LifecycleHookName="term",
                                      LifecycleActionToken=note["LifecycleActionToken"], LifecycleActionResult="CONTINUE")
        self.assertNotIn(victim, states(self.group))
        wait("the victim terminated", lambda: ec2.describe_instances(InstanceIds=[victim])["Reservations"][0]["Instances"][0]["State"]["Name"] == "terminated", 5)

    def test_a_warm_pool_reuses_instances_on_scale_in(self):
        asg.put_warm_pool(AutoScalingGroupName=self.group, PoolState="Stopped",
                          InstanceReusePolicy={"ReuseOnScaleIn": True})
        self.hook("launch", "autoscaling:EC2_INSTANCE_LAUNCHING", timeout=600)
        self.hook("term", "autoscaling:EC2_INSTANCE_TERMINATING", timeout=600)
        receive(self.url, 2)
        complete = lambda n, hook: asg.complete_lifecycle_action(
            AutoScalingGroupName=self.group, LifecycleHookName=hook,
            LifecycleActionToken=n["LifecycleActionToken"], LifecycleActionResult="CONTINUE")
        ec2_state = lambda i: ec2.describe_instances(InstanceIds=[i])["Reservations"][0]["Instances"][0]["State"]["Name"]
        asg.set_desired_capacity(AutoScalingGroupName=self.group, DesiredCapacity=1)
        [launch] = receive(self.url, 1)
        self.assertEqual((launch["Origin"], launch["Destination"]), ("EC2", "AutoScalingGroup"))
        complete(launch, "launch")
        inst = launch["EC2InstanceId"]
        asg.set_desired_capacity(AutoScalingGroupName=self.group, DesiredCapacity=0)
        [term] = receive(self.url, 1)
        self.assertEqual((term["Origin"], term["Destination"], term["EC2InstanceId"]), ("AutoScalingGroup", "WarmPool", inst))
        complete(term, "term")
        self.assertEqual(states(self.group), {})
        self.assertEqual(ec2_state(inst), "stopped")
        pool = asg.describe_warm_pool(AutoScalingGroupName=self.group)["Instances"]
        self.assertEqual([(p["InstanceId"], p["LifecycleState"]) for p in pool], [(inst, "Warmed:Stopped")])
        # Scale out again: the pooled instance comes back (Origin WarmPool), not a new one.
        asg.set_desired_capacity(AutoScalingGroupName=self.group, DesiredCapacity=1)
        [back] = receive(self.url, 1)
        self.assertEqual((back["Origin"], back["Destination"], back["EC2InstanceId"]), ("WarmPool", "AutoScalingGroup", inst))
        self.assertEqual(ec2_state(inst), "running")
        complete(back, "launch")
        self.assertEqual(states(self.group), {inst: "InService"})
        self.assertEqual(asg.describe_warm_pool(AutoScalingGroupName=self.group)["Instances"], [])
        asg.delete_warm_pool(AutoScalingGroupName=self.group, ForceDelete=True)

    def test_deleting_a_hook_completes_its_actions(self):
        self.hook("launch", "autoscaling:EC2_INSTANCE_LAUNCHING", timeout=600)
        receive(self.url, 1)
        asg.set_desired_capacity(AutoScalingGroupName=self.group, DesiredCapacity=1)
        [first] = states(self.group)
        self.assertEqual(states(self.group)[first], "Pending:Wait")
        asg.delete_lifecycle_hook(AutoScalingGroupName=self.group, LifecycleHookName="launch")
        # ABANDON: the instance goes, and (no hook left) its replacement goes straight in service.
        wait("the launch abandoned", lambda: first not in states(self.group), 5)
        wait("a replacement in service", lambda: list(states(self.group).values()) == ["InService"], 5)
        # A terminating instance is let go (CONTINUE).
        self.hook("term", "autoscaling:EC2_INSTANCE_TERMINATING", timeout=600)
        receive(self.url, 1)
        asg.set_desired_capacity(AutoScalingGroupName=self.group, DesiredCapacity=0)
        self.assertEqual(list(states(self.group).values()), ["Terminating:Wait"])
        asg.delete_lifecycle_hook(AutoScalingGroupName=self.group, LifecycleHookName="term")
        wait("the instance gone", lambda: not states(self.group), 5)


def register(cluster, instance_type="m5.large", subnet=None, total=None):
    args = dict(ImageId="ami-760aaa0f", MinCount=1, MaxCount=1, InstanceType=instance_type)
    if subnet:
        args["SubnetId"] = subnet
    inst = ec2.run_instances(**args)["Instances"][0]["InstanceId"]
    doc = json.dumps({"instanceId": inst})
    kwargs = dict(cluster=cluster, instanceIdentityDocument=doc)
    if total:
        kwargs["totalResources"] = [{"name": k, "type": "INTEGER", "integerValue": v} for k, v in total.items()]
    ci = ecs.register_container_instance(**kwargs)["containerInstance"]
    return inst, ci["containerInstanceArn"]


def resources(ci, which="registeredResources"):
    return {r["name"]: r.get("integerValue") for r in ci[which] if r["name"] in ("CPU", "MEMORY")}


def task_def(cpu, mem):
    family = f"td-{uuid.uuid4().hex[:8]}"
    return ecs.register_task_definition(
        family=family, containerDefinitions=[{"name": "app", "image": "busybox", "cpu": cpu, "memory": mem}]
    )["taskDefinition"]["taskDefinitionArn"]


class Ecs(unittest.TestCase):
    def setUp(self):
        self.vpc, self.subnets = network()
        self.cluster = f"c-{uuid.uuid4().hex[:10]}"
        ecs.create_cluster(clusterName=self.cluster)

    def describe(self, arns):
        return ecs.describe_container_instances(cluster=self.cluster, containerInstances=arns)["containerInstances"]

    def test_registered_resources_follow_the_type_or_the_request(self):
        _, a = register(self.cluster, "m5.xlarge", self.subnets[0])
        _, b = register(self.cluster, "m5.large", self.subnets[0], total={"CPU": 1024, "MEMORY": 2048})
        ca, cb = sorted(self.describe([a, b]), key=lambda c: c["containerInstanceArn"] != a)
        self.assertEqual(resources(ca), {"CPU": 4096, "MEMORY": 15576})
        self.assertEqual(resources(cb), {"CPU": 1024, "MEMORY": 2048})

    def test_run_task_reports_what_does_not_fit(self):
        register(self.cluster, "t3.small", self.subnets[0])  # 2048 CPU, 1924 MiB
        td = task_def(512, 1024)
        r = ecs.run_task(cluster=self.cluster, taskDefinition=td, count=3)
        self.assertEqual(len(r["tasks"]), 1)
        self.assertEqual([f["reason"] for f in r["failures"]], ["RESOURCE:MEMORY"] * 2)
        cpu_td = task_def(4096, 128)
        r = ecs.run_task(cluster=self.cluster, taskDefinition=cpu_td, count=1)
        self.assertEqual(r["failures"][0]["reason"], "RESOURCE:CPU")
        # Tasks stay RUNNING however often they are described.
        arn = ecs.list_tasks(cluster=self.cluster)["taskArns"][0]
        for _ in range(5):
            t = ecs.describe_tasks(cluster=self.cluster, tasks=[arn])["tasks"][0]
        self.assertEqual(t["lastStatus"], "RUNNING")

    def test_services_place_tasks_report_the_rest_and_catch_up(self):
        register(self.cluster, "m5.large", self.subnets[0])  # 2048 CPU
        td = task_def(1024, 1024)
        ecs.create_service(cluster=self.cluster, serviceName="web", taskDefinition=td, desiredCount=4)
        svc = ecs.describe_services(cluster=self.cluster, services=["web"])["services"][0]
        self.assertEqual((svc["desiredCount"], svc["runningCount"], svc["pendingCount"]), (4, 2, 0))
        msg = svc["events"][0]["message"]
        self.assertIn("(service web) was unable to place a task because no container instance met all of its requirements", msg)
        self.assertIn("has insufficient CPU units available", msg)
        self.assertEqual(len(ecs.list_tasks(cluster=self.cluster, serviceName="web")["taskArns"]), 2)
        register(self.cluster, "m5.large", self.subnets[0])
        wait("the service to catch up", lambda: ecs.describe_services(cluster=self.cluster, services=["web"])["services"][0]["runningCount"] == 4)
        ecs.update_service(cluster=self.cluster, service="web", desiredCount=1)
        self.assertEqual(len(ecs.list_tasks(cluster=self.cluster, serviceName="web", desiredStatus="RUNNING")["taskArns"]), 1)

    def test_draining_moves_service_tasks_and_takes_no_new_ones(self):
        _, a = register(self.cluster, "m5.large", self.subnets[0])
        td = task_def(512, 512)
        ecs.create_service(cluster=self.cluster, serviceName="api", taskDefinition=td, desiredCount=2)
        _, b = register(self.cluster, "m5.large", self.subnets[0])
        ecs.update_container_instances_state(cluster=self.cluster, containerInstances=[a], status="DRAINING")
        wait("a to be empty", lambda: self.describe([a])[0]["runningTasksCount"] == 0)
        self.assertEqual(self.describe([b])[0]["runningTasksCount"], 2)
        r = ecs.run_task(cluster=self.cluster, taskDefinition=td, count=1)
        self.assertEqual(r["tasks"][0]["containerInstanceArn"], b)

    def test_attributes_take_a_full_arn(self):
        _, a = register(self.cluster, "m5.large", self.subnets[0])
        attr = {"name": "opsd.drained", "value": "2026-12-03T00:00:00Z", "targetType": "container-instance", "targetId": a}
        ecs.put_attributes(cluster=self.cluster, attributes=[attr])
        ci = self.describe([a])[0]
        self.assertIn({"name": "opsd.drained", "value": "2026-12-03T00:00:00Z"}, ci["attributes"])
        # Deleted by name and target, without the value, as AWS documents for custom attributes.
        ecs.delete_attributes(cluster=self.cluster, attributes=[{k: v for k, v in attr.items() if k != "value"}])
        self.assertNotIn("opsd.drained", [x["name"] for x in self.describe([a])[0]["attributes"]])

    def test_a_drain_honours_minimum_healthy_percent(self):
        # m5.large holds 7680 MiB: tasks of 3000 MiB, two per instance.
        _, a = register(self.cluster, "m5.large", self.subnets[0])
        td = task_def(256, 3000)
        ecs.create_service(cluster=self.cluster, serviceName="full", taskDefinition=td, desiredCount=2)
        self.assertEqual(self.describe([a])[0]["runningTasksCount"], 2)
        ecs.update_container_instances_state(cluster=self.cluster, containerInstances=[a], status="DRAINING")
        # 100 % (the default) and no room elsewhere: nothing may stop, the drain never finishes.
        time.sleep(2.5)
        self.assertEqual(self.describe([a])[0]["runningTasksCount"], 2)
        # Room for one replacement: one task moves, the other stays until there is room for it.
        _, b = register(self.cluster, "t3.medium", self.subnets[0])  # 3907 MiB: one task
        wait("one task to move", lambda: self.describe([b])[0]["runningTasksCount"] == 1)
        time.sleep(1.5)
        self.assertEqual(self.describe([a])[0]["runningTasksCount"], 1)
        svc = ecs.describe_services(cluster=self.cluster, services=["full"])["services"][0]
        self.assertEqual(svc["runningCount"], 2)
        # At 50 % a task may stop before its replacement exists.
        ecs.update_service(cluster=self.cluster, service="full", deploymentConfiguration={"minimumHealthyPercent": 50, "maximumPercent": 200})
        wait("a to be empty", lambda: self.describe([a])[0]["runningTasksCount"] == 0)

    def test_create_service_keeps_its_deployment_configuration(self):
        _, a = register(self.cluster, "m5.large", self.subnets[0])
        ecs.create_service(cluster=self.cluster, serviceName="half", taskDefinition=task_def(256, 3000), desiredCount=2,
                           deploymentConfiguration={"minimumHealthyPercent": 50, "maximumPercent": 100})
        ecs.update_container_instances_state(cluster=self.cluster, containerInstances=[a], status="DRAINING")
        # 50 % of 2: one task may stop with no replacement; the other must keep running.
        wait("one task to stop", lambda: self.describe([a])[0]["runningTasksCount"] == 1)
        time.sleep(1.5)
        self.assertEqual(self.describe([a])[0]["runningTasksCount"], 1)

    def test_registration_and_fleet_changes_take_time_when_tagged(self):
        slow = f"slow-{uuid.uuid4().hex[:8]}"
        ecs.create_cluster(clusterName=slow, tags=[{"key": "moto:register-seconds", "value": "1.5"}])
        user_data = base64.b64encode(f"#!/bin/bash\necho ECS_CLUSTER={slow} >> /etc/ecs/ecs.config\n".encode()).decode()
        spec = {"ImageId": "ami-760aaa0f", "InstanceType": "c5.large", "SubnetId": self.subnets[0], "UserData": user_data}
        sfr = ec2.request_spot_fleet(SpotFleetRequestConfig={
            "TargetCapacity": 1, "IamFleetRole": "arn:aws:iam::123456789012:role/fleet",
            "AllocationStrategy": "lowestPrice", "Type": "maintain", "LaunchSpecifications": [spec],
            "TagSpecifications": [{"ResourceType": "spot-fleet-request", "Tags": [{"Key": "moto:fleet-modifying-seconds", "Value": "1.5"}]}],
        })["SpotFleetRequestId"]
        self.assertEqual(ecs.list_container_instances(cluster=slow)["containerInstanceArns"], [])
        wait("the instance to register", lambda: len(ecs.list_container_instances(cluster=slow)["containerInstanceArns"]) == 1, 5)
        ec2.modify_spot_fleet_request(SpotFleetRequestId=sfr, TargetCapacity=2)
        state = lambda: ec2.describe_spot_fleet_requests(SpotFleetRequestIds=[sfr])["SpotFleetRequestConfigs"][0]["SpotFleetRequestState"]
        self.assertEqual(state(), "modifying")
        wait("active again", lambda: state() == "active", 5)
        wait("the second to register", lambda: len(ecs.list_container_instances(cluster=slow)["containerInstanceArns"]) == 2, 5)
        ec2.cancel_spot_fleet_requests(SpotFleetRequestIds=[sfr], TerminateInstances=True)

    def test_a_weighted_maintain_fleet_launches_whole_instances_and_replaces_lost_ones(self):
        spec = {"ImageId": "ami-760aaa0f", "InstanceType": "c5.large", "SubnetId": self.subnets[0], "WeightedCapacity": 3.0}
        sfr = ec2.request_spot_fleet(SpotFleetRequestConfig={
            "TargetCapacity": 4, "IamFleetRole": "arn:aws:iam::123456789012:role/fleet",
            "AllocationStrategy": "lowestPrice", "Type": "maintain", "LaunchSpecifications": [spec]})["SpotFleetRequestId"]
        fulfilled = lambda: ec2.describe_spot_fleet_requests(SpotFleetRequestIds=[sfr])["SpotFleetRequestConfigs"][0]["SpotFleetRequestConfig"]["FulfilledCapacity"]
        active = lambda: [i["InstanceId"] for i in ec2.describe_spot_fleet_instances(SpotFleetRequestId=sfr)["ActiveInstances"]]
        self.assertEqual((len(active()), fulfilled()), (2, 6.0))
        lost = active()[0]
        ec2.terminate_instances(InstanceIds=[lost])
        wait("a replacement", lambda: len(active()) == 2 and lost not in active(), 5)
        self.assertEqual(fulfilled(), 6.0)
        # Lowered with noTermination: nothing is lost, nothing launched.
        ec2.modify_spot_fleet_request(SpotFleetRequestId=sfr, TargetCapacity=3, ExcessCapacityTerminationPolicy="noTermination")
        ec2.terminate_instances(InstanceIds=[active()[0]])
        time.sleep(2.5)
        self.assertEqual((len(active()), fulfilled()), (1, 3.0))
        ec2.cancel_spot_fleet_requests(SpotFleetRequestIds=[sfr], TerminateInstances=True)

    def test_tasks_start_pending_and_ec2_fleets_modify_when_tagged(self):
        slow = f"pend-{uuid.uuid4().hex[:8]}"
        ecs.create_cluster(clusterName=slow, tags=[{"key": "moto:task-start-seconds", "value": "1.5"}])
        register(slow, "m5.large", self.subnets[0])
        ecs.create_service(cluster=slow, serviceName="web", taskDefinition=task_def(256, 256), desiredCount=2)
        svc = lambda: ecs.describe_services(cluster=slow, services=["web"])["services"][0]
        self.assertEqual((svc()["pendingCount"], svc()["runningCount"]), (2, 0))
        arns = ecs.list_tasks(cluster=slow, serviceName="web")["taskArns"]
        self.assertEqual({t["lastStatus"] for t in ecs.describe_tasks(cluster=slow, tasks=arns)["tasks"]}, {"PENDING"})
        wait("running", lambda: (svc()["pendingCount"], svc()["runningCount"]) == (0, 2), 5)
        # An EC2 Fleet tagged moto:fleet-modifying-seconds is `modifying` after a change.
        lt = ec2.create_launch_template(LaunchTemplateName=f"lt-{uuid.uuid4().hex[:8]}",
                                        LaunchTemplateData={"ImageId": "ami-760aaa0f", "InstanceType": "c5.large"})["LaunchTemplate"]["LaunchTemplateId"]
        fleet = ec2.create_fleet(
            Type="maintain",
            TargetCapacitySpecification={"TotalTargetCapacity": 1, "DefaultTargetCapacityType": "on-demand"},
            LaunchTemplateConfigs=[{"LaunchTemplateSpecification": {"LaunchTemplateId": lt, "Version": "$Latest"},
                                    "Overrides": [{"InstanceType": "c5.large", "SubnetId": self.subnets[0]}]}],
            TagSpecifications=[{"ResourceType": "fleet", "Tags": [{"Key": "moto:fleet-modifying-seconds", "Value": "1.5"}]}],
        )["FleetId"]
        ec2.modify_fleet(FleetId=fleet, TargetCapacitySpecification={"TotalTargetCapacity": 2})
        state = lambda: ec2.describe_fleets(FleetIds=[fleet])["Fleets"][0]["FleetState"]
        self.assertEqual(state(), "modifying")
        wait("active", lambda: state() == "active", 5)
        ec2.delete_fleets(FleetIds=[fleet], TerminateInstances=True)

    def test_service_counters_lag_behind_placement_when_tagged(self):
        lagging = f"lag-{uuid.uuid4().hex[:8]}"
        ecs.create_cluster(clusterName=lagging, tags=[{"key": "moto:service-counts-lag-seconds", "value": "1.5"}])
        _, arn = register(lagging, "m5.large", self.subnets[0])
        ecs.create_service(cluster=lagging, serviceName="web", taskDefinition=task_def(256, 256), desiredCount=2)
        placed = time.time()
        svc = lambda: ecs.describe_services(cluster=lagging, services=["web"])["services"][0]
        # The tasks and the instance's resources change at once; the counters do not yet.
        self.assertEqual(len(ecs.list_tasks(cluster=lagging, serviceName="web")["taskArns"]), 2)
        ci = ecs.describe_container_instances(cluster=lagging, containerInstances=[arn])["containerInstances"][0]
        self.assertEqual({r["name"]: r["integerValue"] for r in ci["remainingResources"] if r["name"] == "CPU"}, {"CPU": 2048 - 512})
        self.assertEqual(svc()["runningCount"], 0)
        wait("the counters", lambda: svc()["runningCount"] == 2, 5)
        self.assertGreaterEqual(time.time() - placed, 1.4)
        self.assertEqual(svc()["deployments"][0]["runningCount"], 2)

    def test_fleet_instances_register_and_deregister(self):
        user_data = base64.b64encode(f"#!/bin/bash\necho ECS_CLUSTER={self.cluster} >> /etc/ecs/ecs.config\n".encode()).decode()
        spec = {"ImageId": "ami-760aaa0f", "InstanceType": "c5.large", "SubnetId": self.subnets[0], "UserData": user_data, "WeightedCapacity": 2.0}
        sfr = ec2.request_spot_fleet(SpotFleetRequestConfig={
            "TargetCapacity": 4, "IamFleetRole": "arn:aws:iam::123456789012:role/fleet",
            "AllocationStrategy": "lowestPrice", "Type": "maintain", "LaunchSpecifications": [spec],
        })["SpotFleetRequestId"]
        arns = ecs.list_container_instances(cluster=self.cluster)["containerInstanceArns"]
        self.assertEqual(len(arns), 2)
        self.assertEqual(resources(self.describe(arns)[0]), {"CPU": 2048, "MEMORY": 3704})
        ec2.modify_spot_fleet_request(SpotFleetRequestId=sfr, TargetCapacity=2, ExcessCapacityTerminationPolicy="noTermination")
        fleet = ec2.describe_spot_fleet_requests(SpotFleetRequestIds=[sfr])["SpotFleetRequestConfigs"][0]["SpotFleetRequestConfig"]
        self.assertEqual((fleet["TargetCapacity"], fleet["FulfilledCapacity"]), (2, 4.0))
        victim = self.describe(arns)[0]["ec2InstanceId"]
        ec2.terminate_instances(InstanceIds=[victim])
        self.assertEqual(len(ecs.list_container_instances(cluster=self.cluster)["containerInstanceArns"]), 1)
        fleet = ec2.describe_spot_fleet_requests(SpotFleetRequestIds=[sfr])["SpotFleetRequestConfigs"][0]["SpotFleetRequestConfig"]
        self.assertEqual(fleet["FulfilledCapacity"], 2.0)
        # "default" (as AWS spells it) terminates the excess.
        ec2.modify_spot_fleet_request(SpotFleetRequestId=sfr, TargetCapacity=0, ExcessCapacityTerminationPolicy="default")
        wait("the fleet to empty", lambda: not ecs.list_container_instances(cluster=self.cluster)["containerInstanceArns"])

    def test_update_state_takes_ten_and_list_tasks_pages(self):
        arns = [register(self.cluster, "m5.large", self.subnets[0])[1] for _ in range(11)]
        with self.assertRaises(ClientError) as e:
            ecs.update_container_instances_state(cluster=self.cluster, containerInstances=arns, status="DRAINING")
        self.assertEqual(e.exception.response["Error"]["Code"], "InvalidParameterException")
        ecs.update_container_instances_state(cluster=self.cluster, containerInstances=arns[:10], status="DRAINING")
        td = task_def(8, 8)
        for _ in range(13):
            ecs.run_task(cluster=self.cluster, taskDefinition=td, count=10)
        page = ecs.list_tasks(cluster=self.cluster)
        self.assertEqual(len(page["taskArns"]), 100)
        rest = ecs.list_tasks(cluster=self.cluster, nextToken=page["nextToken"])
        self.assertEqual(len(rest["taskArns"]), 30)
        self.assertNotIn("nextToken", rest)
        self.assertEqual(len(ecs.list_tasks(cluster=self.cluster, maxResults=50)["taskArns"]), 50)
        everything = [a for p in ecs.get_paginator("list_tasks").paginate(cluster=self.cluster) for a in p["taskArns"]]
        self.assertEqual(len(set(everything)), 130)

    def test_tagged_cluster_stops_tasks_slowly(self):
        cluster = f"c-{uuid.uuid4().hex[:10]}"
        ecs.create_cluster(clusterName=cluster, tags=[{"key": "moto:task-stop-seconds", "value": "2"}])
        register(cluster, "m5.large", self.subnets[0])
        arn = ecs.run_task(cluster=cluster, taskDefinition=task_def(256, 256))["tasks"][0]["taskArn"]
        ecs.stop_task(cluster=cluster, task=arn)
        t = ecs.describe_tasks(cluster=cluster, tasks=[arn])["tasks"][0]
        self.assertEqual((t["desiredStatus"], t["lastStatus"]), ("STOPPED", "STOPPING"))
        wait("the task to stop", lambda: ecs.describe_tasks(cluster=cluster, tasks=[arn])["tasks"][0]["lastStatus"] == "STOPPED")

    def test_daemon_services_run_one_task_per_instance(self):
        register(self.cluster, "m5.large", self.subnets[0])  # 2048 CPU
        register(self.cluster, "m5.large", self.subnets[0])
        ecs.run_task(cluster=self.cluster, taskDefinition=task_def(2048, 1024), count=1)  # one instance full
        ecs.create_service(cluster=self.cluster, serviceName="agent", taskDefinition=task_def(512, 256), schedulingStrategy="DAEMON")
        svc = ecs.describe_services(cluster=self.cluster, services=["agent"])["services"][0]
        self.assertEqual((svc["schedulingStrategy"], svc["desiredCount"], svc["runningCount"]), ("DAEMON", 2, 1))
        self.assertIn("(service agent) was unable to place a task", svc["events"][0]["message"])
        register(self.cluster, "m5.large", self.subnets[0])
        wait("the daemon on the new instance", lambda: ecs.describe_services(cluster=self.cluster, services=["agent"])["services"][0]["runningCount"] == 2)
        svc = ecs.describe_services(cluster=self.cluster, services=["agent"])["services"][0]
        self.assertEqual(svc["desiredCount"], 3)

    def test_cancelled_spot_fleet_cannot_be_modified(self):
        spec = {"ImageId": "ami-760aaa0f", "InstanceType": "c5.large", "SubnetId": self.subnets[0]}
        sfr = ec2.request_spot_fleet(SpotFleetRequestConfig={
            "TargetCapacity": 1, "IamFleetRole": "arn:aws:iam::123456789012:role/fleet",
            "AllocationStrategy": "lowestPrice", "Type": "maintain", "LaunchSpecifications": [spec],
        })["SpotFleetRequestId"]
        ec2.modify_spot_fleet_request(SpotFleetRequestId=sfr, TargetCapacity=2)
        ec2.cancel_spot_fleet_requests(SpotFleetRequestIds=[sfr], TerminateInstances=False)
        with self.assertRaises(ClientError) as e:
            ec2.modify_spot_fleet_request(SpotFleetRequestId=sfr, TargetCapacity=1)
        self.assertEqual(e.exception.response["Error"]["Code"], "FleetNotInModifiableState")
        # A one-time request (type request) cannot be modified either.
        once = ec2.request_spot_fleet(SpotFleetRequestConfig={
            "TargetCapacity": 1, "IamFleetRole": "arn:aws:iam::123456789012:role/fleet",
            "AllocationStrategy": "lowestPrice", "Type": "request", "LaunchSpecifications": [spec],
        })["SpotFleetRequestId"]
        with self.assertRaises(ClientError) as e:
            ec2.modify_spot_fleet_request(SpotFleetRequestId=once, TargetCapacity=2)
        self.assertEqual(e.exception.response["Error"]["Code"], "FleetNotInModifiableState")
        ec2.cancel_spot_fleet_requests(SpotFleetRequestIds=[once], TerminateInstances=True)

    def test_ec2_fleet_modify(self):
        user_data = base64.b64encode(f"#!/bin/bash\necho ECS_CLUSTER={self.cluster} >> /etc/ecs/ecs.config\n".encode()).decode()
        lt = ec2.create_launch_template(
            LaunchTemplateName=f"lt-{uuid.uuid4().hex[:8]}",
            LaunchTemplateData={"ImageId": "ami-760aaa0f", "InstanceType": "c5.large", "UserData": user_data},
        )["LaunchTemplate"]["LaunchTemplateId"]
        fleet = ec2.create_fleet(
            Type="maintain",
            TargetCapacitySpecification={"TotalTargetCapacity": 1, "DefaultTargetCapacityType": "on-demand"},
            LaunchTemplateConfigs=[{
                "LaunchTemplateSpecification": {"LaunchTemplateId": lt, "Version": "$Latest"},
                "Overrides": [{"InstanceType": "c5.large", "SubnetId": self.subnets[0], "WeightedCapacity": 1.0}],
            }],
        )["FleetId"]
        self.assertEqual(len(ecs.list_container_instances(cluster=self.cluster)["containerInstanceArns"]), 1)
        ec2.modify_fleet(FleetId=fleet, TargetCapacitySpecification={"TotalTargetCapacity": 3})
        self.assertEqual(len(ecs.list_container_instances(cluster=self.cluster)["containerInstanceArns"]), 3)
        ec2.modify_fleet(FleetId=fleet, TargetCapacitySpecification={"TotalTargetCapacity": 2}, ExcessCapacityTerminationPolicy="no-termination")
        f = ec2.describe_fleets(FleetIds=[fleet])["Fleets"][0]
        self.assertEqual((f["TargetCapacitySpecification"]["TotalTargetCapacity"], f["FulfilledCapacity"]), (2, 3.0))
        ids = [i["InstanceId"] for i in ec2.describe_fleet_instances(FleetId=fleet)["ActiveInstances"]]
        ec2.terminate_instances(InstanceIds=ids[:1])
        f = ec2.describe_fleets(FleetIds=[fleet])["Fleets"][0]
        self.assertEqual(f["FulfilledCapacity"], 2.0)
        with self.assertRaises(ClientError):
            ec2.modify_fleet(FleetId="fleet-00000000-0000-0000-0000-000000000000", TargetCapacitySpecification={"TotalTargetCapacity": 1})
        # A deleted fleet cannot be modified.
        ec2.delete_fleets(FleetIds=[fleet], TerminateInstances=True)
        with self.assertRaises(ClientError) as e:
            ec2.modify_fleet(FleetId=fleet, TargetCapacitySpecification={"TotalTargetCapacity": 1})
        self.assertEqual(e.exception.response["Error"]["Code"], "FleetNotInModifiableState")


class DynamoDBProxy(unittest.TestCase):
    """scripts/ddb_proxy.py: writes to a `throttle<N>` table are refused N % of the time with AWS's
    throttling codes, and change nothing; other tables and every read pass through."""

    # No retry at all (botocore retries DynamoDB's throttling up to ten times otherwise).
    ddb = boto3.client("dynamodb", endpoint_url=os.environ["AWS_ENDPOINT_URL_DYNAMODB"], region_name=REGION,
                       config=Config(retries={"mode": "standard", "total_max_attempts": 1}))

    def table(self, name):
        self.ddb.create_table(TableName=name, BillingMode="PAY_PER_REQUEST",
                              AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                              KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}])
        self.addCleanup(self.ddb.delete_table, TableName=name)
        return name

    def writes(self, table, n):
        """(refused codes, items written) of n PutItem calls."""
        codes = []
        for i in range(n):
            try:
                self.ddb.put_item(TableName=table, Item={"pk": {"S": f"k{i}"}})
            except ClientError as e:
                codes.append(e.response["Error"]["Code"])
                self.assertEqual(e.response["ResponseMetadata"]["HTTPStatusCode"], 400)
        count = self.ddb.scan(TableName=table, Select="COUNT")["Count"]
        return codes, count

    def test_a_plain_table_passes_through(self):
        codes, count = self.writes(self.table(f"plain-{uuid.uuid4().hex[:8]}"), 20)
        self.assertEqual((codes, count), ([], 20))

    def test_every_write_refused_at_100(self):
        t = self.table(f"t-throttle100-{uuid.uuid4().hex[:8]}")
        codes, count = self.writes(t, 20)
        self.assertEqual(count, 0, "a refused write changed the table")
        self.assertEqual(set(codes), {"ProvisionedThroughputExceededException", "ThrottlingException"})
        # Reads and transactions: reads pass, a transaction is refused like any write.
        self.ddb.get_item(TableName=t, Key={"pk": {"S": "k0"}})
        with self.assertRaises(ClientError):
            self.ddb.transact_write_items(TransactItems=[{"Put": {"TableName": t, "Item": {"pk": {"S": "x"}}}}])

    def test_a_share_is_refused(self):
        codes, count = self.writes(self.table(f"t-throttle30-{uuid.uuid4().hex[:8]}"), 200)
        self.assertEqual(count, 200 - len(codes))
        self.assertTrue(25 <= len(codes) <= 95, f"{len(codes)} of 200 refused at 30 %")


class Faults(unittest.TestCase):
    """moto_ext/faults.py: faults switched on for one access key, in each service's own protocol;
    other keys (here the module's clients) see none of them."""

    def setUp(self):
        self.key = "AKIAFAULT" + uuid.uuid4().hex[:11].upper()
        self.addCleanup(self.faults, {})

    def faults(self, spec):
        import urllib.request
        body = json.dumps(dict(spec, access_key=self.key)).encode()
        req = urllib.request.Request(ENDPOINT + "/moto-ext/faults", data=body, method="POST")
        with urllib.request.urlopen(req) as r:
            self.assertEqual(json.load(r), {"ok": True})

    def injected(self):
        import urllib.request
        with urllib.request.urlopen(f"{ENDPOINT}/moto-ext/faults?access_key={self.key}") as r:
            return json.load(r)["injected"]

    def client(self, name):
        once = Config(retries={"mode": "standard", "total_max_attempts": 1})
        return boto3.client(name, endpoint_url=ENDPOINT, region_name=REGION, config=once,
                            aws_access_key_id=self.key, aws_secret_access_key="secret")

    def refusals(self, call, n):
        """The (HTTP status, code) of each refused call of n."""
        out = []
        for _ in range(n):
            try:
                call()
            except ClientError as e:
                out.append((e.response["ResponseMetadata"]["HTTPStatusCode"], e.response["Error"]["Code"]))
        return out

    def test_ec2_documented_buckets_per_api(self):
        self.faults({"throttle": {"ec2": "documented"}})
        mine = self.client("ec2")
        # 100 tokens refilled at 20/s: 150 calls in well under 2.5 s run out.
        refused = self.refusals(mine.describe_regions, 150)
        self.assertTrue(refused, "150 DescribeRegions in a burst were never throttled")
        self.assertEqual(set(refused), {(503, "RequestLimitExceeded")})
        # Another API has a bucket of its own; another key is not throttled at all.
        self.assertEqual(self.refusals(mine.describe_availability_zones, 5), [])
        self.assertEqual(self.refusals(ec2.describe_regions, 20), [])
        self.assertEqual(sum(self.injected()["RequestLimitExceeded"].values()), len(refused))
        # A bucket of its own for one action, the documented ones for the rest.
        self.faults({"throttle": {"ec2": {"*": "documented", "DescribeAvailabilityZones": [2, 0.01]}}})
        self.assertEqual(self.refusals(mine.describe_availability_zones, 4), [(503, "RequestLimitExceeded")] * 2)
        self.assertEqual(self.refusals(mine.describe_regions, 4), [])

    def test_throttling_codes_of_each_service(self):
        self.faults({"throttle": {"autoscaling": [2, 0.01], "ecs": [2, 0.01], "sqs": [2, 0.01]}})
        url, _ = queue()
        a, e, q = self.client("autoscaling"), self.client("ecs"), self.client("sqs")
        self.assertEqual(self.refusals(a.describe_auto_scaling_groups, 4), [(400, "Throttling")] * 2)
        self.assertEqual(self.refusals(e.list_clusters, 4), [(400, "ThrottlingException")] * 2)
        self.assertEqual(self.refusals(lambda: q.get_queue_attributes(QueueUrl=url), 4), [(400, "RequestThrottled")] * 2)
        self.assertEqual(self.refusals(asg.describe_auto_scaling_groups, 4), [])

    def test_server_errors_before_and_after(self):
        self.faults({"errors": {"autoscaling": 1.0, "ec2": 1.0}, "seed": 3})
        self.assertEqual(self.refusals(self.client("autoscaling").describe_auto_scaling_groups, 3),
                         [(500, "ResourceContention")] * 3)
        self.assertEqual(self.injected()["ResourceContention"]["DescribeAutoScalingGroups"], 3)
        # Refused before: nothing happened.
        mine = self.client("ec2")
        vpc, _ = network()
        name = f"sg-{uuid.uuid4().hex[:8]}"
        refused = self.refusals(lambda: mine.create_security_group(GroupName=name, Description="d", VpcId=vpc), 1)
        self.assertIn(refused[0], {(503, "Unavailable"), (500, "InternalError")})
        found = ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": [name]}])["SecurityGroups"]
        self.assertEqual(found, [])
        # Refused after: it happened, and the client was told it failed.
        self.faults({"errors": {"ec2": 1.0}, "after": 1.0, "seed": 3})
        refused = self.refusals(lambda: mine.create_security_group(GroupName=name, Description="d", VpcId=vpc), 1)
        self.assertEqual(len(refused), 1)
        found = ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": [name]}])["SecurityGroups"]
        self.assertEqual(len(found), 1)
        injected = self.injected()
        self.assertEqual(sum(v.get("CreateSecurityGroup", 0) for k, v in injected.items() if k.endswith("(after)")), 1)

    def test_a_share_of_errors(self):
        self.faults({"errors": {"autoscaling": 0.3}, "seed": 7})
        refused = self.refusals(self.client("autoscaling").describe_auto_scaling_groups, 200)
        self.assertTrue(30 <= len(refused) <= 90, f"{len(refused)} of 200 refused at 30 %")

    def test_new_ids_are_not_found_for_a_while(self):
        self.faults({"not_found_seconds": 2})
        mine = self.client("ec2")
        _, subnets = network()
        eni = ec2.create_network_interface(SubnetId=subnets[0])["NetworkInterface"]["NetworkInterfaceId"]
        inst = ec2.run_instances(ImageId="ami-760aaa0f", MinCount=1, MaxCount=1, SubnetId=subnets[0])["Instances"][0]["InstanceId"]
        with self.assertRaises(ClientError) as e:
            mine.describe_network_interfaces(NetworkInterfaceIds=[eni])
        self.assertEqual(e.exception.response["Error"]["Code"], "InvalidNetworkInterfaceID.NotFound")
        with self.assertRaises(ClientError) as e:
            mine.attach_network_interface(NetworkInterfaceId=eni, InstanceId=inst, DeviceIndex=1)
        self.assertEqual(e.exception.response["Error"]["Code"], "InvalidNetworkInterfaceID.NotFound")
        with self.assertRaises(ClientError) as e:
            mine.describe_instances(InstanceIds=[inst])
        self.assertEqual(e.exception.response["Error"]["Code"], "InvalidInstanceID.NotFound")
        # Other keys see them at once; this one once the window has passed.
        self.assertEqual(len(ec2.describe_network_interfaces(NetworkInterfaceIds=[eni])["NetworkInterfaces"]), 1)
        time.sleep(2.1)
        self.assertEqual(len(mine.describe_network_interfaces(NetworkInterfaceIds=[eni])["NetworkInterfaces"]), 1)
        self.assertEqual(len(mine.describe_instances(InstanceIds=[inst])["Reservations"]), 1)
        ec2.terminate_instances(InstanceIds=[inst])

    def test_bad_rules_are_refused(self):
        import urllib.error
        with self.assertRaises(urllib.error.HTTPError) as e:
            self.faults({"throttle": {"autoscaling": "documented"}})
        self.assertEqual(e.exception.code, 400)


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def sandbox_fleet(n, *args):
    """n instances served by the sandbox's sshd (scripts/sandbox fleet): ([(id, address)], ssh port)."""
    import subprocess
    out = subprocess.run([os.path.join(ROOT, "scripts", "sandbox"), "fleet", str(n), *args],
                         check=True, capture_output=True, text=True).stdout
    doc = json.loads(out)
    return [(i["id"], i["address"]) for i in doc["instances"]], doc["ssh_port"]


class InstanceConnect(unittest.TestCase):
    """SendSSHPublicKey keeps a key 60 s for the instance and OS user, and the sandbox sshd takes it
    through its AuthorizedKeysCommand; GetConsoleOutput carries cloud-init's host-key block."""

    USER = "opsd-sandbox"

    @classmethod
    def setUpClass(cls):
        import tempfile
        # boto3 checks lengths itself; the server's own checks are reached without that.
        cls.raw = boto3.client("ec2-instance-connect", endpoint_url=ENDPOINT, region_name=REGION,
                               config=Config(retries={"max_attempts": 1}, parameter_validation=False))
        cls.dir = tempfile.mkdtemp(prefix="eic-test-")
        cls.key = os.path.join(cls.dir, "id")
        import subprocess
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", cls.key], check=True)
        with open(cls.key + ".pub") as f:
            cls.pub = f.read().strip()

    def ssh(self, addr, port):
        import subprocess
        r = subprocess.run(["ssh", "-F", "/dev/null", "-i", self.key, "-p", str(port), "-o", "BatchMode=yes",
                            "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=no",
                            "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=5",
                            f"{self.USER}@{addr}", "echo connected"], capture_output=True, text=True, timeout=30)
        return r.returncode == 0 and "connected" in r.stdout

    def push(self, instance, user=None, key=None, **kw):
        return self.raw.send_ssh_public_key(InstanceId=instance, InstanceOSUser=user or self.USER,
                                            SSHPublicKey=key or self.pub, **kw)

    def age(self, instance, seconds):
        import urllib.request
        req = urllib.request.Request(f"{ENDPOINT}/moto-ext/instance-connect/age", method="POST",
                                     data=json.dumps({"instance_id": instance, "seconds": seconds}).encode())
        urllib.request.urlopen(req, timeout=5).read()

    def code(self, call):
        with self.assertRaises(ClientError) as e:
            call()
        return e.exception.response["Error"]["Code"]

    def test_a_pushed_key_logs_in_for_60_seconds(self):
        [(inst, addr)], port = sandbox_fleet(1)
        self.assertFalse(self.ssh(addr, port), "a key never pushed was accepted")
        self.assertTrue(self.push(inst)["Success"])
        self.assertTrue(self.ssh(addr, port), "the pushed key was refused")
        self.age(inst, 59)
        self.assertTrue(self.ssh(addr, port), "the key was gone before 60 s")
        self.age(inst, 2)
        self.assertFalse(self.ssh(addr, port), "a key pushed 61 s ago was accepted")

    def test_the_key_is_the_instance_and_users(self):
        [(a, addr_a), (b, addr_b)], port = sandbox_fleet(2)
        self.push(a)
        self.assertFalse(self.ssh(addr_b, port), "a key pushed to another instance was accepted")
        self.push(b, user="someone")
        self.assertFalse(self.ssh(addr_b, port), "a key pushed for another OS user was accepted")
        self.assertTrue(self.ssh(addr_a, port))

    def test_arguments_and_states_are_checked(self):
        [(inst, _)], _ = sandbox_fleet(1)
        self.assertEqual(self.code(lambda: self.push("i-nothex!!!")), "InvalidArgsException")
        self.assertEqual(self.code(lambda: self.push(inst, user="x" * 33)), "InvalidArgsException")
        self.assertEqual(self.code(lambda: self.push(inst, key="ssh-ed25519 AAAA")), "InvalidArgsException")
        not_a_key = "ssh-ed25519 " + base64.b64encode(b"\0\0\0\x07ssh-rsa" + b"x" * 60).decode()
        self.assertEqual(self.code(lambda: self.push(inst, key=not_a_key)), "InvalidArgsException")
        self.assertEqual(self.code(lambda: self.push(inst, AvailabilityZone="us-east-1b")), "InvalidArgsException")
        self.assertEqual(self.code(lambda: self.push("i-0123456789abcdef0")), "EC2InstanceNotFoundException")
        [(stopped, _)], _ = sandbox_fleet(1, "--state", "stopped")
        self.assertEqual(self.code(lambda: self.push(stopped)), "EC2InstanceStateInvalidException")
        self.assertTrue(self.push(inst, AvailabilityZone="us-east-1a")["Success"])

    def test_iam_denial_and_throttling_switches(self):
        [(inst, addr)], port = sandbox_fleet(1, "--tag", "moto:instance-connect-error=AccessDenied")
        with self.assertRaises(ClientError) as e:
            self.push(inst)
        self.assertEqual(e.exception.response["Error"]["Code"], "AccessDeniedException")
        self.assertIn("ec2-instance-connect:SendSSHPublicKey", e.exception.response["Error"]["Message"])
        self.assertFalse(self.ssh(addr, port))
        ec2.create_tags(Resources=[inst], Tags=[{"Key": "moto:instance-connect-error", "Value": "Throttling"}])
        self.assertEqual(self.code(lambda: self.push(inst)), "ThrottlingException")

    def console(self, inst):
        out = ec2.get_console_output(InstanceId=inst)
        return out.get("Output")

    def test_console_output_has_the_hosts_key(self):
        [(inst, _)], _ = sandbox_fleet(1)
        text = self.console(inst)  # boto3 decodes the base64 AWS sends
        with open(os.path.join(ROOT, "target", "sandbox", "keys", "host_ed25519.pub")) as f:
            host = " ".join(f.read().split()[:2])
        block = text.split("-----BEGIN SSH HOST KEY KEYS-----\n")[1].split("-----END SSH HOST KEY KEYS-----")[0]
        self.assertEqual([" ".join(line.split()[:2]) for line in block.splitlines()], [host])
        self.assertIn("ec2: -----BEGIN SSH HOST KEY FINGERPRINTS-----", text)

    def test_console_switches(self):
        [(none, _)], _ = sandbox_fleet(1, "--tag", "moto:console-host-keys=none")
        self.assertNotIn("BEGIN SSH HOST KEY KEYS", self.console(none))
        [(wrong, _)], _ = sandbox_fleet(1, "--tag", "moto:console-host-keys=wrong")
        with open(os.path.join(ROOT, "target", "sandbox", "keys", "host_ed25519.pub")) as f:
            host = f.read().split()[1]
        text = self.console(wrong)
        self.assertIn("BEGIN SSH HOST KEY KEYS", text)
        self.assertNotIn(host, text)
        [(late, _)], _ = sandbox_fleet(1, "--tag", "moto:console-seconds=2")
        self.assertIsNone(self.console(late))
        time.sleep(2.1)
        self.assertIn("BEGIN SSH HOST KEY KEYS", self.console(late))


if __name__ == "__main__":
    unittest.main(verbosity=2)
