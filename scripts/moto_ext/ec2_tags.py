"""EC2 tag lookups by resource id.

moto 5.2.5 finds one resource's tags by scanning every tag of every resource
(`describe_tags(filters={"resource-id": [...]})`), so a DescribeInstances with a `tag:` filter costs
O(instances^2): 4.4 s per call at 3,000 instances, and concurrent calls from the test suite pile up
until the SDK's 60 s operation timeout. AWS answers in constant time; the patch reads the resource's
own tag dict, returning exactly what the scan returned.
"""
from moto.ec2.models.core import TaggedEC2Resource
from moto.ec2.models.tags import EC2_PREFIX_TO_RESOURCE, get_prefix


def _get_tags(self):
    resource_id = getattr(self, "id", None)
    if not resource_id:
        return []
    tags = self.ec2_backend.tags.get(resource_id, {})  # .get: the defaultdict must not grow
    kind = EC2_PREFIX_TO_RESOURCE.get(get_prefix(resource_id), "")
    return [{"resource_id": resource_id, "key": k, "value": v, "resource_type": kind} for k, v in tags.items()]


def apply():
    """Patch moto: tag lookups by resource id."""
    TaggedEC2Resource.get_tags = _get_tags
