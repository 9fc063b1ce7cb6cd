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
import os
import secrets
import time
from typing import TYPE_CHECKING, Any

from ...core.provider import InstanceState, StatusReport, first, no_note
from ...errors import ProvisionError
from ...model import Instance
from ..cloud import caller_cidr, describe_machine, launch_in_order, poll_until
from .api import CREDENTIALS_HINT, ENDPOINT_ENV, Ec2Api, import_boto3
from .catalog import AMI_PARAMETERS, SPOT_INTERRUPTION_CODES, cloud_config
from .cluster import (
    NODE_TAG,
    AwsContext,
    create_resources,
    delete_resources,
    find_group,
)
from .offers import adopted, find_attempts, label

if TYPE_CHECKING:
    from ...core.provider import ClusterKeys, LaunchRequest, ResourceNote, Resources
    from ...events import InstanceId, ProviderName
    from ...model import ClusterSpec, Offer
    from .offers import Attempt

__all__ = ["AwsContext", "AwsProvider"]

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
        attempts = await find_attempts(self.api, spec.region or self.default_region, spec)
        found = {a.offer.instance_type: a.offer for a in attempts}
        return list(found.values())

    # -- cluster resources --------------------------------------------------------------

    async def prepare(
        self, cluster_id: str, spec: ClusterSpec, keys: ClusterKeys, note: ResourceNote = no_note
    ) -> AwsContext:
        """Find the offers, the AMI, then import the key pair and open SSH to us."""
        region = spec.region or self.default_region
        attempts = await find_attempts(self.api, region, spec)
        if not attempts:
            raise ProvisionError(
                f"no AWS instance type offers {describe_machine(spec)} in {region}"
            )
        context = AwsContext(cluster_id, spec, region, attempts, note=note)
        context.image_id = self.image or await self._public_image(region, spec)
        try:
            cidr = await asyncio.to_thread(caller_cidr, self._cidr_endpoint)
            await create_resources(self.api, context, keys, cidr)
        except BaseException:
            await asyncio.shield(delete_resources(self.api, context))
            raise
        return context

    async def restore(
        self, cluster_id: str, spec: ClusterSpec, resources: Resources, note: ResourceNote = no_note
    ) -> AwsContext:
        """The context of an existing cluster: its region, key pair and group, as noted
        (calls nothing; a later launch finds its offers, image and group then)."""
        region = first(resources, "region") or spec.region or self.default_region
        context = AwsContext(cluster_id, spec, region, [], note=note)
        context.key_name = first(resources, "key-pair", f"skyward-{cluster_id}")
        context.group_id = first(resources, "security-group-id")
        return context

    async def _complete(self, context: AwsContext) -> None:
        """What a restored context lacks before it can launch (offers, image, group)."""
        if not context.attempts:
            context.attempts = await find_attempts(self.api, context.region, context.spec)
        if not context.image_id:
            context.image_id = self.image or await self._public_image(context.region, context.spec)
        if not context.group_id:
            context.group_id = await find_group(self.api, context)

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

    # -- instances ----------------------------------------------------------------------

    async def launch(self, context: AwsContext, request: LaunchRequest) -> InstanceId:
        """Run one instance, trying the next offer when AWS has no capacity for one."""
        await self._complete(context)
        existing = await self._tagged(context, node=request.node_id, states=["pending", "running"])
        for instance in existing:
            if instance["InstanceId"] not in context.instances:
                # Launched by an earlier try of this very node: adopt it, never launch twice.
                attempt = adopted(context.attempts, instance, context.region)
                context.instances[instance["InstanceId"]] = attempt
                return str(instance["InstanceId"])
        user_data = cloud_config(request.host_key, request.host_public_key, request.keys.public_key)
        token = secrets.token_hex(6)

        async def run(index: int, attempt: Attempt) -> str:
            iid = await self._run(context, request, attempt, user_data, f"{token}-{index}")
            context.instances[iid] = attempt
            return iid

        return await launch_in_order(
            f"aws node {request.node_id} in {context.region}",
            context.attempts,
            label,
            run,
            f"AWS has no capacity in {context.region} for {describe_machine(context.spec)}",
        )

    async def _run(
        self,
        context: AwsContext,
        request: LaunchRequest,
        attempt: Attempt,
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
                {"ResourceType": kind, "Tags": context.tags(**{NODE_TAG: node})}
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
            *context.by_tag,
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
        state = "pending"

        async def running() -> Instance | None:
            nonlocal state
            instance = await self._describe(context, instance_id)
            state = (instance or {}).get("State", {}).get("Name", "pending")
            if instance is not None and state == "running" and instance.get("PublicIpAddress"):
                return self._instance(context, instance)
            if state in ("shutting-down", "terminated", "stopping", "stopped"):
                reason = (instance or {}).get("StateReason", {}).get("Message", state)
                raise ProvisionError(f"AWS instance {instance_id} is {state}: {reason}")
            return None

        return await poll_until(
            running,
            timeout,
            f"AWS instance {instance_id} running with a public address",
            first=1.0,
            last_seen=lambda: f"state {state}",
        )

    def _instance(self, context: AwsContext, described: dict[str, Any]) -> Instance:
        iid = described["InstanceId"]
        attempt = context.instances.get(iid) or adopted(context.attempts, described, context.region)
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
        await delete_resources(self.api, context)
