"""Extensions that make moto 5.2.5 behave as AWS documents where opsd depends on it.

Importing a module changes nothing; `apply()` patches moto's classes (and starts the extensions'
timer threads), once, in a fixed order. They touch moto internals, which is why
scripts/requirements-sandbox.txt pins the version. scripts/test_moto_ext.py drives every extension
with boto3.
"""

_applied = False


def apply() -> None:
    """Patch moto with every extension, in this order:

    1. ec2_tags: tag lookups by resource id (DescribeInstances with tag filters stays fast).
    2. eni: interfaces, and the inner layer of an instance's termination (Instance.terminate
       detaches secondary interfaces, then runs moto's).
    3. ecs: ECS on EC2 capacity, and the outer layer of termination (EC2Backend.terminate_instances
       runs moto's, which terminates each instance through layer 2, then deregisters the container
       instances). The two termination patches are on different methods, one inside the other, so
       every termination (an API call, a group's scale-in, ABANDON, a fleet) passes both: interfaces
       are detached before the container instance is deregistered.
    4. fleets: ModifySpotFleetRequest and ModifyFleet (their launches register through layer 3).
    5. lifecycle: Auto Scaling hooks and wait states (ABANDON and terminate hooks end in layer 3).
    6. instance_connect: SendSSHPublicKey kept 60 s and served to the sandbox sshd's
       AuthorizedKeysCommand; GetConsoleOutput with cloud-init's host-key block.
    7. faults: throttling, transient server errors and eventual consistency, switched on per access
       key, in front of every request (it wraps moto's WSGI dispatcher, so it sees what a client sends).
    """
    global _applied
    if _applied:
        return
    from . import ec2_tags, ecs, eni, faults, fleets, instance_connect, lifecycle

    for module in (ec2_tags, eni, ecs, fleets, lifecycle, instance_connect, faults):
        module.apply()
    _applied = True
