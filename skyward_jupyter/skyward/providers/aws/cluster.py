"""An EC2 cluster's context and its shared resources: a key pair and a security group.

Why apart: what a cluster makes besides its instances is made once at ``prepare`` and
removed at ``teardown`` (also from a context restored from the ledger); both are named
and tagged with the cluster id, so a kernel that died mid-call leaves nothing unfound.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from ...core.provider import ClusterContext, ClusterKeys, ResourceNote, no_note
from ...errors import ProvisionError
from .api import Ec2Api
from .offers import Attempt

__all__ = ["CLUSTER_TAG", "NODE_TAG", "AwsContext", "create_resources", "delete_resources"]

CLUSTER_TAG = "skyward-cluster"
NODE_TAG = "skyward-node"


@dataclass
class AwsContext(ClusterContext):
    """One cluster's resources and what each of its instances was launched as."""

    region: str
    attempts: list[Attempt]
    image_id: str = ""
    key_name: str = ""
    group_id: str = ""
    instances: dict[str, Attempt] = field(default_factory=dict)
    note: ResourceNote = field(default=no_note, repr=False)

    def tags(self, **extra: str) -> list[dict[str, str]]:
        """The cluster's tags (and ``extra``) in EC2's shape."""
        tags = {"Name": self.cluster_id, CLUSTER_TAG: self.cluster_id, **extra}
        return [{"Key": k, "Value": v} for k, v in tags.items()]

    @property
    def by_tag(self) -> list[dict[str, object]]:
        """The filter that finds what is tagged with the cluster."""
        return [{"Name": f"tag:{CLUSTER_TAG}", "Values": [self.cluster_id]}]


async def create_resources(api: Ec2Api, context: AwsContext, keys: ClusterKeys, cidr: str) -> None:
    """Import the key pair and make the group: SSH from ``cidr``, all between members."""
    region, name = context.region, f"skyward-{context.cluster_id}"
    context.note("region", region)
    context.note("key-pair", name)
    await api.call(
        region,
        "import_key_pair",
        KeyName=name,
        PublicKeyMaterial=keys.public_key.encode(),
        TagSpecifications=[{"ResourceType": "key-pair", "Tags": context.tags()}],
    )
    context.key_name = name
    context.note("security-group", name)
    group = await api.call(
        region,
        "create_security_group",
        GroupName=name,
        Description=f"skyward cluster {context.cluster_id}: SSH from {cidr}, all between nodes",
        TagSpecifications=[{"ResourceType": "security-group", "Tags": context.tags()}],
    )
    context.group_id = group["GroupId"]
    context.note("security-group-id", context.group_id)
    await api.call(
        region,
        "authorize_security_group_ingress",
        GroupId=context.group_id,
        IpPermissions=[
            {
                "IpProtocol": "tcp",
                "FromPort": 22,
                "ToPort": 22,
                "IpRanges": [{"CidrIp": cidr, "Description": "skyward: SSH from the client"}],
            },
            {
                "IpProtocol": "-1",
                "UserIdGroupPairs": [
                    {
                        "GroupId": context.group_id,
                        "Description": "skyward: all traffic between the nodes of the cluster",
                    }
                ],
            },
        ],
    )


async def find_group(api: Ec2Api, context: AwsContext) -> str:
    """The id of the cluster's security group (a restored context did not note it)."""
    groups = await api.call(context.region, "describe_security_groups", Filters=context.by_tag)
    found = groups.get("SecurityGroups", [])
    if not found:
        raise ProvisionError(f"aws: the security group of {context.cluster_id} is gone")
    return str(found[0]["GroupId"])


async def delete_resources(api: Ec2Api, context: AwsContext) -> None:
    """Delete the cluster's groups (by tag, and the noted one) and its key pair."""
    region = context.region
    name = context.key_name or f"skyward-{context.cluster_id}"
    groups = await api.call(region, "describe_security_groups", Filters=context.by_tag)
    ids = [group["GroupId"] for group in groups.get("SecurityGroups", [])]
    if context.group_id and context.group_id not in ids:
        ids.append(context.group_id)
    for group_id in ids:
        await _delete_group(api, region, group_id)
    try:
        await api.call(region, "delete_key_pair", KeyName=name)
    except ProvisionError as exc:
        if "InvalidKeyPair.NotFound" not in str(exc):
            raise


async def _delete_group(api: Ec2Api, region: str, group_id: str) -> None:
    """Delete a security group; its last instance's interface may hold it a while."""
    deadline = time.monotonic() + 300.0
    delay = 2.0
    while True:
        try:
            await api.call(region, "delete_security_group", GroupId=group_id)
            return
        except ProvisionError as exc:
            if "InvalidGroup.NotFound" in str(exc):
                return
            if "DependencyViolation" not in str(exc) or time.monotonic() > deadline:
                raise
        await asyncio.sleep(delay)
        delay = min(delay * 1.5, 15.0)
