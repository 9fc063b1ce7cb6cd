"""The ``aws`` provider: EC2 instances through boto3.

Credentials come from boto3's chain (environment, profile, instance role); the region from
``--region``, else the chain, else us-east-1; the endpoint from ``SKYWARD_AWS_ENDPOINT``, else
boto3's own ``AWS_ENDPOINT_URL_EC2`` / ``AWS_ENDPOINT_URL`` (what boto3 itself honours).
The image is the AMI that AWS's public SSM parameter names for the region (Deep Learning
Base AMI for GPUs, Ubuntu otherwise), or ``SKYWARD_AWS_IMAGE`` (an AMI id) where set.
Per cluster: an imported key pair and a security group open on tcp/22 to the caller's
address only and to all traffic from its own members (torch's rendezvous, NCCL, the
head-node relay), both named and tagged with the cluster id. Instances carry cloud-init
user data that installs the client-generated host key before sshd first starts, so the
host key is pinned from the first connection; IMDSv2 is required (session tokens, one
hop), so neither a request forged through a service on the node nor a container on it
can read that user data from the metadata.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from ...core.provider import (
    ClusterKeys,
    InstanceState,
    LaunchRequest,
    ResourceNote,
    Resources,
    StatusReport,
    first,
    no_note,
)
from ...errors import CapacityError, ProvisionError
from ...events import InstanceId, ProviderName
from ...model import ClusterSpec, Instance, Offer
from ..cloud import caller_cidr
from .api import CREDENTIALS_HINT, ENDPOINT_ENV, Ec2Api, import_boto3
from .catalog import AMI_PARAMETERS, ON_DEMAND_USD, SPOT_INTERRUPTION_CODES, cloud_config

__all__ = ["AwsContext", "AwsProvider"]

log = logging.getLogger("skyward")

CLUSTER_TAG = "skyward-cluster"
NODE_TAG = "skyward-node"
SPOT_TERMINATION = "Server.SpotInstanceTermination"
LIVE_STATES = ["pending", "running", "stopping", "stopped", "shutting-down"]
METADATA_OPTIONS = {
    "HttpTokens": "required",
    "HttpPutResponseHopLimit": 1,
    "HttpEndpoint": "enabled",
}
"""IMDSv2 only, one hop: the user data (with the host key) needs a session token."""
IMAGE_ENV = "SKYWARD_AWS_IMAGE"
BOTO_ENDPOINTS = ("AWS_ENDPOINT_URL_EC2", "AWS_ENDPOINT_URL")


@dataclass(frozen=True, slots=True)
class _Attempt:
    """One way to launch a node: an offer in one market, at its price."""

    offer: Offer
    spot: bool
    price: float


@dataclass
class AwsContext:
    """One cluster's resources and what each of its instances was launched as."""

    cluster_id: str
    region: str
    spec: ClusterSpec
    attempts: list[_Attempt]
    image_id: str = ""
    key_name: str = ""
    group_id: str = ""
    instances: dict[str, _Attempt] = field(default_factory=dict)
    note: ResourceNote = field(default=no_note, repr=False)


def _tags(cluster_id: str, **extra: str) -> list[dict[str, str]]:
    tags = {"Name": cluster_id, CLUSTER_TAG: cluster_id, **extra}
    return [{"Key": k, "Value": v} for k, v in tags.items()]


def _wanted(spec: ClusterSpec) -> str:
    gpus = f"{spec.accelerator or 'any GPU'} x{spec.accelerator_count}"
    what = gpus if spec.accelerator_count else "a CPU machine"
    market = {"always": " (spot)", "never": " (on-demand)"}.get(spec.spot, "")
    cap = f" under ${spec.max_price:.2f}/h" if spec.max_price else ""
    return what + market + cap


class AwsProvider:
    """EC2 behind the provider protocol."""

    name: ProviderName = "aws"
    ssh_user = "ubuntu"  # the default user of Ubuntu AMIs (and of the Deep Learning AMI)

    def __init__(
        self, region: str | None = None, endpoint: str | None = None, image: str | None = None
    ) -> None:
        boto3 = import_boto3()
        self.endpoint = endpoint or os.environ.get(ENDPOINT_ENV) or None
        # Where boto3 itself is pointed elsewhere (its own variables), SSH is opened to our
        # side of a connection to that endpoint, as for ours.
        self._cidr_endpoint = self.endpoint or next(
            (os.environ[v] for v in BOTO_ENDPOINTS if os.environ.get(v)), None
        )
        self.image = image or os.environ.get(IMAGE_ENV) or None
        session = boto3.session.Session(region_name=region)
        if session.get_credentials() is None:
            raise ProvisionError(f"no AWS credentials found: {CREDENTIALS_HINT}")
        self.default_region = region or session.region_name or "us-east-1"
        self.api = Ec2Api(session, self.endpoint)

    # -- offers -------------------------------------------------------------------------

    async def offers(self, spec: ClusterSpec) -> list[Offer]:
        """Instance types with the GPUs asked for (at least that many), cheapest first."""
        found = {a.offer.instance_type: a.offer for a in await self._attempts(spec)}
        return list(found.values())

    async def _attempts(self, spec: ClusterSpec) -> list[_Attempt]:
        region = spec.region or self.default_region
        offered = await self.api.call(
            region,
            "describe_instance_type_offerings",
            LocationType="region",
            Filters=[{"Name": "instance-type", "Values": sorted(ON_DEMAND_USD)}],
        )
        names = sorted({o["InstanceType"] for o in offered.get("InstanceTypeOfferings", [])})
        if not names:
            return []
        described = await self.api.call(region, "describe_instance_types", InstanceTypes=names)
        offers = [
            offer
            for info in described.get("InstanceTypes", [])
            if (offer := _offer(info, region)) is not None and _matches(offer, spec)
        ]
        spot_prices: dict[str, float] = {}
        if offers and spec.spot != "never":
            history = await self.api.call(
                region,
                "describe_spot_price_history",
                InstanceTypes=[o.instance_type for o in offers],
                ProductDescriptions=["Linux/UNIX"],
                StartTime=time.time(),
            )
            for item in history.get("SpotPriceHistory", []):
                kind, price = item["InstanceType"], float(item["SpotPrice"])
                spot_prices[kind] = min(price, spot_prices.get(kind, price))
        attempts = []
        for offer in offers:
            spot = spot_prices.get(offer.instance_type)
            offer = Offer(**{**_fields(offer), "spot_price_per_hour": spot})
            if spec.spot != "always":
                attempts.append(_Attempt(offer, False, offer.price_per_hour))
            if spec.spot != "never" and spot is not None:
                attempts.append(_Attempt(offer, True, spot))
        if spec.max_price is not None:
            attempts = [a for a in attempts if a.price <= spec.max_price]
        attempts.sort(key=lambda a: (a.price, a.offer.instance_type))
        return attempts

    # -- cluster resources --------------------------------------------------------------

    async def prepare(
        self, cluster_id: str, spec: ClusterSpec, keys: ClusterKeys, note: ResourceNote = no_note
    ) -> AwsContext:
        """Find the offers, the AMI, then import the key pair and open SSH to us."""
        region = spec.region or self.default_region
        attempts = await self._attempts(spec)
        if not attempts:
            raise ProvisionError(f"no AWS instance type offers {_wanted(spec)} in {region}")
        context = AwsContext(cluster_id, region, spec, attempts, note=note)
        context.image_id = self.image or await self._public_image(region, spec)
        try:
            await self._create_resources(context, keys)
        except BaseException:
            await asyncio.shield(self._delete_resources(context))
            raise
        return context

    async def restore(
        self, cluster_id: str, spec: ClusterSpec, resources: Resources, note: ResourceNote = no_note
    ) -> AwsContext:
        """The context of an existing cluster: its region, key pair and group, as noted
        (calls nothing; a later launch finds its offers, image and group then)."""
        region = first(resources, "region") or spec.region or self.default_region
        context = AwsContext(cluster_id, region, spec, [], note=note)
        context.key_name = first(resources, "key-pair", f"skyward-{cluster_id}")
        context.group_id = first(resources, "security-group-id")
        return context

    async def _complete(self, context: AwsContext) -> None:
        """What a restored context lacks before it can launch (offers, image, group)."""
        if not context.attempts:
            context.attempts = await self._attempts(context.spec)
        if not context.image_id:
            context.image_id = self.image or await self._public_image(context.region, context.spec)
        if not context.group_id:
            groups = await self.api.call(
                context.region,
                "describe_security_groups",
                Filters=[{"Name": f"tag:{CLUSTER_TAG}", "Values": [context.cluster_id]}],
            )
            found = groups.get("SecurityGroups", [])
            if not found:
                raise ProvisionError(f"aws: the security group of {context.cluster_id} is gone")
            context.group_id = found[0]["GroupId"]

    async def _public_image(self, region: str, spec: ClusterSpec) -> str:
        """The AMI that AWS's public SSM parameter names in ``region``; an error that says
        which lookup failed and what to set where the region (or the endpoint) has none."""
        parameter = AMI_PARAMETERS[spec.accelerator_count > 0]
        try:
            found = await self.api.call(region, "get_parameter", service="ssm", Name=parameter)
        except ProvisionError as exc:
            if "ParameterNotFound" not in str(exc):
                raise
            kind = "GPU (Deep Learning Base AMI)" if spec.accelerator_count else "CPU (Ubuntu)"
            raise ProvisionError(
                f"aws: found no {kind} image in {region}: the SSM parameter {parameter} is not "
                f"there (ssm get_parameter: ParameterNotFound); set {IMAGE_ENV} to an AMI id "
                "in that region, or choose a region that publishes it with --region"
            ) from exc
        return str(found["Parameter"]["Value"])

    async def _create_resources(self, context: AwsContext, keys: ClusterKeys) -> None:
        region, name = context.region, f"skyward-{context.cluster_id}"
        cidr = await asyncio.to_thread(caller_cidr, self._cidr_endpoint)
        context.note("region", region)
        context.note("key-pair", name)
        await self.api.call(
            region,
            "import_key_pair",
            KeyName=name,
            PublicKeyMaterial=keys.public_key.encode(),
            TagSpecifications=[{"ResourceType": "key-pair", "Tags": _tags(context.cluster_id)}],
        )
        context.key_name = name
        context.note("security-group", name)
        group = await self.api.call(
            region,
            "create_security_group",
            GroupName=name,
            Description=f"skyward cluster {context.cluster_id}: SSH from {cidr}, all between nodes",
            TagSpecifications=[
                {"ResourceType": "security-group", "Tags": _tags(context.cluster_id)}
            ],
        )
        context.group_id = group["GroupId"]
        context.note("security-group-id", context.group_id)
        await self.api.call(
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

    # -- instances ----------------------------------------------------------------------

    async def launch(self, context: AwsContext, request: LaunchRequest) -> InstanceId:
        """Run one instance, trying the next offer when AWS has no capacity for one."""
        await self._complete(context)
        existing = await self._tagged(context, node=request.node_id, states=["pending", "running"])
        for instance in existing:
            if instance["InstanceId"] not in context.instances:
                # Launched by an earlier try of this very node: adopt it, never launch twice.
                attempt = _attempt_of(context, instance)
                context.instances[instance["InstanceId"]] = attempt
                return str(instance["InstanceId"])
        user_data = cloud_config(request.host_key, request.host_public_key, request.keys.public_key)
        token = secrets.token_hex(6)
        tried: list[str] = []
        for index, attempt in enumerate(context.attempts):
            label = _label(attempt)
            try:
                iid = await self._run(context, request, attempt, user_data, f"{token}-{index}")
            except CapacityError as exc:
                tried.append(label)
                following = context.attempts[index + 1 : index + 2]
                then = f"trying {_label(following[0])}" if following else "no other offer left"
                log.warning(
                    "skyward: aws node %d: %s in %s: %s; %s",
                    request.node_id, label, context.region, str(exc).rstrip("."), then,
                )  # fmt: skip
                continue
            context.instances[iid] = attempt
            if tried:
                log.warning("skyward: aws node %d launched as %s", request.node_id, label)
            return iid
        raise CapacityError(
            f"AWS has no capacity in {context.region} for {_wanted(context.spec)}: "
            f"tried {', '.join(tried)}"
        )

    async def _run(
        self,
        context: AwsContext,
        request: LaunchRequest,
        attempt: _Attempt,
        user_data: str,
        token: str,
    ) -> str:
        node = str(request.node_id)
        kwargs: dict[str, Any] = {
            "ImageId": context.image_id,
            "InstanceType": attempt.offer.instance_type,
            "MinCount": 1,
            "MaxCount": 1,
            "KeyName": context.key_name,
            "SecurityGroupIds": [context.group_id],
            "UserData": user_data,
            "InstanceInitiatedShutdownBehavior": "terminate",
            "MetadataOptions": METADATA_OPTIONS,
            "ClientToken": f"{context.cluster_id}-{node}-{token}"[:64],
            "BlockDeviceMappings": [
                {"DeviceName": "/dev/sda1", "Ebs": {"VolumeSize": 100, "DeleteOnTermination": True}}
            ],
            "TagSpecifications": [
                {"ResourceType": kind, "Tags": _tags(context.cluster_id, **{NODE_TAG: node})}
                for kind in ("instance", "volume")
            ],
        }
        if attempt.spot:
            options: dict[str, Any] = {
                "SpotInstanceType": "one-time",
                "InstanceInterruptionBehavior": "terminate",
            }
            if context.spec.max_price is not None:
                options["MaxPrice"] = f"{context.spec.max_price:.4f}"
            kwargs["InstanceMarketOptions"] = {"MarketType": "spot", "SpotOptions": options}
        answer = await self.api.call(context.region, "run_instances", **kwargs)
        return str(answer["Instances"][0]["InstanceId"])

    async def _describe(self, context: AwsContext, instance_id: str) -> dict[str, Any] | None:
        """The instance's description, or None once AWS no longer knows it."""
        try:
            answer = await self.api.call(
                context.region, "describe_instances", InstanceIds=[instance_id]
            )
        except ProvisionError as exc:
            if "InvalidInstanceID" in str(exc):
                return None
            raise
        for reservation in answer.get("Reservations", []):
            for instance in reservation.get("Instances", []):
                return dict(instance)
        return None

    async def _tagged(
        self, context: AwsContext, node: int | None = None, states: list[str] | None = None
    ) -> list[dict[str, Any]]:
        filters = [
            {"Name": f"tag:{CLUSTER_TAG}", "Values": [context.cluster_id]},
            {"Name": "instance-state-name", "Values": states or LIVE_STATES},
        ]
        if node is not None:
            filters.append({"Name": f"tag:{NODE_TAG}", "Values": [str(node)]})
        answer = await self.api.call(context.region, "describe_instances", Filters=filters)
        return [i for r in answer.get("Reservations", []) for i in r.get("Instances", [])]

    async def wait_running(
        self, context: AwsContext, instance_id: InstanceId, timeout: float
    ) -> Instance:
        """Poll until the instance runs with a public address (backoff, under a deadline)."""
        deadline = time.monotonic() + timeout
        delay = 1.0
        while True:
            instance = await self._describe(context, instance_id)
            state = (instance or {}).get("State", {}).get("Name", "pending")
            if instance is not None and state == "running" and instance.get("PublicIpAddress"):
                return self._instance(context, instance)
            if state in ("shutting-down", "terminated", "stopping", "stopped"):
                reason = (instance or {}).get("StateReason", {}).get("Message", state)
                raise ProvisionError(f"AWS instance {instance_id} is {state}: {reason}")
            if time.monotonic() + delay > deadline:
                raise ProvisionError(
                    f"AWS instance {instance_id} was not running with a public address "
                    f"within {timeout:.0f} s (state {state})"
                )
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 5.0)

    def _instance(self, context: AwsContext, described: dict[str, Any]) -> Instance:
        iid = described["InstanceId"]
        attempt = context.instances.get(iid) or _attempt_of(context, described)
        return Instance(
            id=iid,
            status="running",
            ip=described["PublicIpAddress"],
            private_ip=described.get("PrivateIpAddress", ""),
            ssh_port=22,
            spot=described.get("InstanceLifecycle") == "spot",
            region=described.get("Placement", {}).get("AvailabilityZone", context.region),
            offer=attempt.offer,
        )

    async def status(self, context: AwsContext, instance_id: InstanceId) -> StatusReport:
        """The instance's state; a spot interruption is PREEMPTED with AWS's reason."""
        instance = await self._describe(context, instance_id)
        if instance is None:
            return StatusReport(InstanceState.TERMINATED, "instance not found")
        state = instance.get("State", {}).get("Name", "")
        reason = instance.get("StateReason", {})
        if reason.get("Code") == SPOT_TERMINATION:
            return StatusReport(InstanceState.PREEMPTED, reason.get("Message") or SPOT_TERMINATION)
        request_id = instance.get("SpotInstanceRequestId")
        if request_id:
            answer = await self.api.call(
                context.region, "describe_spot_instance_requests",
                SpotInstanceRequestIds=[request_id],
            )  # fmt: skip
            for spot in answer.get("SpotInstanceRequests", []):
                status = spot.get("Status", {})
                if status.get("Code") in SPOT_INTERRUPTION_CODES:
                    text = f"{status['Code']}: {status.get('Message', '')}".rstrip(": ")
                    return StatusReport(InstanceState.PREEMPTED, text)
        mapped = {
            "pending": InstanceState.PENDING,
            "running": InstanceState.RUNNING,
            "stopping": InstanceState.STOPPED,
            "stopped": InstanceState.STOPPED,
            "shutting-down": InstanceState.TERMINATED,
            "terminated": InstanceState.TERMINATED,
        }.get(state, InstanceState.PENDING)
        return StatusReport(mapped, reason.get("Message", ""))

    async def destroy(self, context: AwsContext, instance_id: InstanceId) -> None:
        """Terminate the instance; return once AWS reports it terminated (or unknown)."""
        try:
            await self.api.call(context.region, "terminate_instances", InstanceIds=[instance_id])
        except ProvisionError as exc:
            if "InvalidInstanceID" not in str(exc):
                raise
        await self._wait_gone(context, [instance_id], timeout=600.0)
        context.instances.pop(instance_id, None)

    async def _wait_gone(self, context: AwsContext, ids: list[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        delay = 0.5
        left = list(ids)
        while left:
            described = [await self._describe(context, iid) for iid in left]
            left = [
                iid
                for iid, d in zip(left, described, strict=True)
                if d is not None and d.get("State", {}).get("Name") != "terminated"
            ]
            if not left:
                return
            if time.monotonic() + delay > deadline:
                raise ProvisionError(
                    f"AWS instances {', '.join(left)} were not terminated within {timeout:.0f} s"
                )
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 5.0)

    # -- teardown -----------------------------------------------------------------------

    async def teardown(self, context: AwsContext) -> None:
        """Terminate any instance still tagged with the cluster, then its group and key."""
        left = [i["InstanceId"] for i in await self._tagged(context)]
        if left:
            await self.api.call(context.region, "terminate_instances", InstanceIds=left)
            await self._wait_gone(context, left, timeout=600.0)
        await self._delete_resources(context)

    async def _delete_resources(self, context: AwsContext) -> None:
        """Delete the cluster's groups (by tag, and the noted one) and its key pair."""
        region = context.region
        name = context.key_name or f"skyward-{context.cluster_id}"
        groups = await self.api.call(
            region,
            "describe_security_groups",
            Filters=[{"Name": f"tag:{CLUSTER_TAG}", "Values": [context.cluster_id]}],
        )
        ids = [group["GroupId"] for group in groups.get("SecurityGroups", [])]
        if context.group_id and context.group_id not in ids:
            ids.append(context.group_id)
        for group_id in ids:
            await self._delete_group(region, group_id)
        try:
            await self.api.call(region, "delete_key_pair", KeyName=name)
        except ProvisionError as exc:
            if "InvalidKeyPair.NotFound" not in str(exc):
                raise

    async def _delete_group(self, region: str, group_id: str) -> None:
        """Delete a security group; its last instance's interface may hold it a while."""
        deadline = time.monotonic() + 300.0
        delay = 2.0
        while True:
            try:
                await self.api.call(region, "delete_security_group", GroupId=group_id)
                return
            except ProvisionError as exc:
                if "InvalidGroup.NotFound" in str(exc):
                    return
                if "DependencyViolation" not in str(exc) or time.monotonic() > deadline:
                    raise
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 15.0)


def _fields(offer: Offer) -> dict[str, Any]:
    return {name: getattr(offer, name) for name in Offer.__slots__}  # type: ignore[attr-defined]


def _offer(info: dict[str, Any], region: str) -> Offer | None:
    kind = info["InstanceType"]
    price = ON_DEMAND_USD.get(kind)
    if price is None:
        return None
    gpus = info.get("GpuInfo", {}).get("Gpus", [])
    return Offer(
        provider="aws",
        instance_type=kind,
        accelerator=gpus[0]["Name"] if gpus else None,
        accelerator_count=sum(int(g.get("Count", 0)) for g in gpus),
        vcpus=float(info.get("VCpuInfo", {}).get("DefaultVCpus", 0)),
        memory_gb=round(info.get("MemoryInfo", {}).get("SizeInMiB", 0) / 1024, 1),
        price_per_hour=price,
        region=region,
    )


def _matches(offer: Offer, spec: ClusterSpec) -> bool:
    if spec.accelerator_count == 0:
        return offer.accelerator_count == 0
    if offer.accelerator_count < spec.accelerator_count:
        return False
    wanted = (spec.accelerator or "").upper()
    return not wanted or (offer.accelerator or "").upper() == wanted


def _label(attempt: _Attempt) -> str:
    market = "spot" if attempt.spot else "on-demand"
    return f"{attempt.offer.instance_type} ({market}, ${attempt.price:.2f}/h)"


def _attempt_of(context: AwsContext, described: dict[str, Any]) -> _Attempt:
    spot = described.get("InstanceLifecycle") == "spot"
    for attempt in context.attempts:
        if attempt.offer.instance_type == described.get("InstanceType") and attempt.spot == spot:
            return attempt
    kind = described.get("InstanceType", "")
    offer = Offer("aws", kind, price_per_hour=ON_DEMAND_USD.get(kind, 0.0), region=context.region)
    return _Attempt(offer, spot, offer.price_per_hour)
