"""The ``gcp`` provider: Compute Engine VMs through google-cloud-compute (REST).

Credentials are Application Default Credentials (or GOOGLE_APPLICATION_CREDENTIALS); the
project comes from GOOGLE_CLOUD_PROJECT or the credentials; ``--region`` is a zone
(``us-central1-a``) or a region whose zones are all tried. Per cluster, for its network
tag: a firewall rule open on tcp/22 to the caller's address only, and one for all
traffic between the cluster's own VMs (source tag = target tag: torch's rendezvous,
NCCL, the head-node relay). When the network also admits SSH from anywhere (the
``default`` network's usual ``default-allow-ssh``), ``up`` says so once, since the
caller-only rule then protects nothing. Each VM gets the cluster key in ``ssh-keys``
metadata, ``block-project-ssh-keys`` (so only that key logs in, not every key of the
project), and a ``startup-script`` that installs the client-generated host key; the VM
counts as running only once it reports (through a guest attribute) that sshd presents
that key, so the client never meets another one.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ...core.provider import ClusterContext, InstanceState, StatusReport, no_note
from ...errors import CapacityError, ProvisionError
from ...model import Instance
from ..cloud import caller_cidr, describe_machine, launch_in_order, poll_until
from .api import ENDPOINT_ENV, ComputeApi
from .catalog import HOST_KEY_ATTRIBUTE, IMAGES, startup_script
from .firewall import NETWORK, delete_firewall, firewall_rules, warn_if_ssh_is_open
from .offers import find_attempts, find_zones, label

if TYPE_CHECKING:
    from ...core.provider import ClusterKeys, LaunchRequest, ResourceNote, Resources
    from ...events import InstanceId, ProviderName
    from ...model import ClusterSpec, Offer
    from .offers import Attempt

__all__ = ["GcpContext", "GcpProvider"]

CLUSTER_LABEL = "skyward-cluster"
NODE_LABEL = "skyward-node"
PREEMPTED_OPERATION = "compute.instances.preempted"
_STATES = {
    "PROVISIONING": InstanceState.PENDING,
    "STAGING": InstanceState.PENDING,
    "REPAIRING": InstanceState.PENDING,
    "RUNNING": InstanceState.RUNNING,
    "STOPPING": InstanceState.STOPPED,
    "SUSPENDING": InstanceState.STOPPED,
    "SUSPENDED": InstanceState.STOPPED,
    "TERMINATED": InstanceState.STOPPED,  # Compute's word for a stopped VM
}


@dataclass
class GcpContext(ClusterContext):
    """One cluster's firewall rule and where each of its VMs lives."""

    attempts: list[Attempt]
    zones: list[str]
    firewall: str = ""
    instances: dict[str, Attempt] = field(default_factory=dict)
    rules: list[str] = field(default_factory=list)  # firewall rules noted, in order
    note: ResourceNote = field(default=no_note, repr=False)

    @property
    def tag(self) -> str:
        return f"skyward-{self.cluster_id}"

    @property
    def internal_rule(self) -> str:
        """The firewall rule admitting the cluster's VMs to each other."""
        return f"{self.tag}-internal"


def _split(instance_id: str) -> tuple[str, str]:
    zone, _, name = instance_id.partition("/")
    if not name:
        raise ProvisionError(f"not a gcp instance id (zone/name): {instance_id}")
    return zone, name


class GcpProvider:
    """Compute Engine behind the provider protocol."""

    name: ProviderName = "gcp"
    ssh_user = "skyward"

    def __init__(self, project: str | None = None, endpoint: str | None = None) -> None:
        self.endpoint = endpoint or os.environ.get(ENDPOINT_ENV) or None
        self.api = ComputeApi(project, self.endpoint)
        self.c = self.api.compute

    # -- offers -------------------------------------------------------------------------

    async def offers(self, spec: ClusterSpec) -> list[Offer]:
        """Machine types with the GPUs asked for (at least that many), cheapest first."""
        found: dict[tuple[str, str], Offer] = {}
        for attempt in await find_attempts(self.api, spec, await find_zones(self.api, spec)):
            found.setdefault((attempt.offer.instance_type, attempt.offer.region), attempt.offer)
        return list(found.values())

    # -- cluster resources --------------------------------------------------------------

    async def prepare(
        self, cluster_id: str, spec: ClusterSpec, keys: ClusterKeys, note: ResourceNote = no_note
    ) -> GcpContext:
        """Find the offers, then open SSH to the caller for the cluster's network tag."""
        zones = await find_zones(self.api, spec)
        attempts = await find_attempts(self.api, spec, zones)
        if not attempts:
            where = zones[0] if len(zones) == 1 else f"zones {', '.join(zones)}"
            raise ProvisionError(
                f"no Google Cloud machine offers {describe_machine(spec)} in {where}"
            )
        context = GcpContext(cluster_id, spec, attempts, zones, note=note)
        cidr = await asyncio.to_thread(caller_cidr, self.endpoint)
        for zone in zones:
            note("zone", zone)  # where teardown looks for the cluster's VMs
        created: list[str] = []
        try:
            for rule in firewall_rules(self.api, cluster_id, context.tag, cidr):
                note("firewall", rule.name)
                context.rules.append(rule.name)
                operation = await self.api.call(
                    self.api.firewalls.insert_unary,
                    project=self.api.project, firewall_resource=rule,
                )  # fmt: skip
                created.append(rule.name)
                await self.api.wait(operation, zone=None)
            context.firewall = context.tag
        except BaseException:
            for name in created:  # only what this call made: never a live cluster's rule
                await asyncio.shield(delete_firewall(self.api, name))
            raise
        await warn_if_ssh_is_open(self.api, context.tag)
        return context

    async def restore(
        self, cluster_id: str, spec: ClusterSpec, resources: Resources, note: ResourceNote = no_note
    ) -> GcpContext:
        """The context of an existing cluster: its zones and firewall rules, as noted
        (calls nothing: a live cluster's rules stay exactly as they are)."""
        context = GcpContext(cluster_id, spec, [], list(resources.get("zone") or ()), note=note)
        context.firewall = context.tag
        context.rules = list(resources.get("firewall") or ())
        return context

    async def _complete(self, context: GcpContext) -> None:
        """What a restored context lacks: the zones (read-only) and, to launch, offers."""
        if not context.zones:
            context.zones = await find_zones(self.api, context.spec)

    # -- instances ----------------------------------------------------------------------

    async def launch(self, context: GcpContext, request: LaunchRequest) -> InstanceId:
        """Insert one VM, trying the next offer or zone when Compute has no capacity."""
        from google.api_core import exceptions as gexc

        await self._complete(context)
        if not context.attempts:
            context.attempts = await find_attempts(self.api, context.spec, context.zones)
        name = f"{context.cluster_id}-n{request.node_id}-{secrets.token_hex(2)}"

        async def insert(index: int, attempt: Attempt) -> str:
            zone = attempt.offer.region
            instance_id = f"{zone}/{name}"
            try:
                operation = await self.api.call(
                    self.api.instances.insert_unary,
                    request=self.c.InsertInstanceRequest(
                        project=self.api.project,
                        zone=zone,
                        instance_resource=self._resource(context, request, attempt, name),
                        request_id=_request_id(name, index),
                    ),
                )
            except gexc.Conflict:
                context.instances[instance_id] = attempt  # a retry of ours already made it
                return instance_id
            context.instances[instance_id] = attempt
            try:
                await self.api.wait(operation, zone=zone)
            except CapacityError:
                context.instances.pop(instance_id, None)
                raise
            return instance_id

        return await launch_in_order(
            f"gcp node {request.node_id}",
            context.attempts,
            label,
            insert,
            f"Google Cloud has no capacity for {describe_machine(context.spec)} in "
            f"{', '.join(context.zones)}",
        )

    def _resource(
        self, context: GcpContext, request: LaunchRequest, attempt: Attempt, name: str
    ) -> Any:
        c, zone, offer = self.c, attempt.offer.region, attempt.offer
        machine = offer.instance_type.split("+", 1)[0]
        gpus = offer.accelerator_count > 0
        user = self.ssh_user
        script = startup_script(
            request.host_key, request.host_public_key, request.keys.public_key, user
        )
        metadata = {
            "ssh-keys": f"{user}:{request.keys.public_key.strip()}",
            "block-project-ssh-keys": "TRUE",
            "startup-script": script,
            "enable-guest-attributes": "TRUE",
        }
        if gpus:
            metadata["install-nvidia-driver"] = "True"
        scheduling = c.Scheduling(
            on_host_maintenance="TERMINATE" if gpus else "MIGRATE",
            automatic_restart=not attempt.spot,
            provisioning_model="SPOT" if attempt.spot else "STANDARD",
        )
        if attempt.spot:
            scheduling.instance_termination_action = "DELETE"
        instance = c.Instance(
            name=name,
            machine_type=f"zones/{zone}/machineTypes/{machine}",
            disks=[
                c.AttachedDisk(
                    boot=True,
                    auto_delete=True,
                    initialize_params=c.AttachedDiskInitializeParams(
                        source_image=os.environ.get("SKYWARD_GCP_IMAGE") or IMAGES[gpus],
                        disk_size_gb=100,
                    ),
                )
            ],
            network_interfaces=[
                c.NetworkInterface(
                    network=NETWORK,
                    access_configs=[c.AccessConfig(name="External NAT", type_="ONE_TO_ONE_NAT")],
                )
            ],
            metadata=c.Metadata(items=[c.Items(key=k, value=v) for k, v in metadata.items()]),
            tags=c.Tags(items=[context.tag]),
            labels={CLUSTER_LABEL: context.cluster_id, NODE_LABEL: str(request.node_id)},
            scheduling=scheduling,
        )
        if attempt.attached:
            instance.guest_accelerators = [
                c.AcceleratorConfig(
                    accelerator_type=f"zones/{zone}/acceleratorTypes/{attempt.attached}",
                    accelerator_count=offer.accelerator_count,
                )
            ]
        return instance

    async def _get(self, instance_id: str) -> Any | None:
        from google.api_core import exceptions as gexc

        zone, name = _split(instance_id)
        try:
            return await self.api.call(
                self.api.instances.get, project=self.api.project, zone=zone, instance=name
            )
        except gexc.NotFound:
            return None

    async def _reported_host_key(self, instance_id: str) -> str:
        from google.api_core import exceptions as gexc

        zone, name = _split(instance_id)
        try:
            found = await self.api.call(
                self.api.instances.get_guest_attributes,
                request=self.c.GetGuestAttributesInstanceRequest(
                    project=self.api.project,
                    zone=zone,
                    instance=name,
                    variable_key=HOST_KEY_ATTRIBUTE,
                ),
            )
        except gexc.NotFound:
            return ""
        return str(found.variable_value).strip()

    async def wait_running(
        self, context: GcpContext, instance_id: InstanceId, timeout: float
    ) -> Instance:
        """Poll until the VM runs, has an external address and reports our host key."""
        status = "PROVISIONING"

        async def ready() -> Instance | None:
            nonlocal status
            vm = await self._get(instance_id)
            status = vm.status if vm is not None else "PROVISIONING"
            if vm is not None and status == "RUNNING" and _external_ip(vm):
                if await self._reported_host_key(instance_id):
                    return self._instance(context, instance_id, vm)
                status = "RUNNING, startup script not done"
            elif status in ("STOPPING", "TERMINATED", "SUSPENDED"):
                raise ProvisionError(f"GCP instance {instance_id} is {status}")
            return None

        return await poll_until(
            ready, timeout, f"GCP instance {instance_id} ready", first=1.0, last_seen=lambda: status
        )

    def _instance(self, context: GcpContext, instance_id: str, vm: Any) -> Instance:
        attempt = context.instances.get(instance_id)
        zone, _ = _split(instance_id)
        spot = vm.scheduling.provisioning_model == "SPOT" or bool(vm.scheduling.preemptible)
        return Instance(
            id=instance_id,
            status="running",
            ip=_external_ip(vm),
            private_ip=vm.network_interfaces[0].network_i_p if vm.network_interfaces else "",
            ssh_port=22,
            spot=spot,
            region=zone,
            offer=attempt.offer if attempt else None,
        )

    async def status(self, context: GcpContext, instance_id: InstanceId) -> StatusReport:
        """The VM's state; a spot VM stopped or deleted by preemption is PREEMPTED."""
        vm = await self._get(instance_id)
        if vm is not None and vm.status in ("RUNNING", "PROVISIONING", "STAGING", "REPAIRING"):
            return StatusReport(_STATES[vm.status], vm.status_message or "")
        preempted = await self._preemption(instance_id)
        if preempted is not None:
            return StatusReport(InstanceState.PREEMPTED, preempted)
        if vm is None:
            return StatusReport(InstanceState.TERMINATED, "instance not found")
        return StatusReport(_STATES.get(vm.status, InstanceState.PENDING), vm.status_message or "")

    async def _preemption(self, instance_id: str) -> str | None:
        """The reason of the zone's ``compute.instances.preempted`` operation for the VM."""
        zone, name = _split(instance_id)
        pager = await self.api.call(
            self.api.zone_operations.list,
            request=self.c.ListZoneOperationsRequest(
                project=self.api.project,
                zone=zone,
                filter=f'operationType="{PREEMPTED_OPERATION}"',
            ),
        )
        for operation in pager:
            if (
                operation.operation_type == PREEMPTED_OPERATION
                and operation.target_link.rsplit("/", 1)[-1] == name
            ):
                message = operation.status_message or "Instance was preempted."
                return f"{PREEMPTED_OPERATION}: {message}"
        return None

    async def destroy(self, context: GcpContext, instance_id: InstanceId) -> None:
        """Delete the VM; return once Compute no longer knows it."""
        from google.api_core import exceptions as gexc

        zone, name = _split(instance_id)
        try:
            operation = await self.api.call(
                self.api.instances.delete_unary,
                project=self.api.project, zone=zone, instance=name,
            )  # fmt: skip
            await self.api.wait(operation, zone=zone)
        except gexc.NotFound:
            pass

        async def gone() -> bool | None:
            return True if await self._get(instance_id) is None else None

        await poll_until(gone, 600.0, f"GCP deletion of instance {instance_id}", first=0.5)
        context.instances.pop(instance_id, None)

    # -- teardown -----------------------------------------------------------------------

    async def teardown(self, context: GcpContext) -> None:
        """Delete any VM still labelled with the cluster, then its firewall rules."""
        await self._complete(context)
        for zone in context.zones:
            pager = await self.api.call(
                self.api.instances.list,
                request=self.c.ListInstancesRequest(
                    project=self.api.project,
                    zone=zone,
                    filter=f"labels.{CLUSTER_LABEL} = {context.cluster_id}",
                ),
            )
            left = [
                f"{zone}/{vm.name}" for vm in pager
                if vm.labels.get(CLUSTER_LABEL) == context.cluster_id
            ]  # fmt: skip
            await asyncio.gather(*(self.destroy(context, iid) for iid in left))
        for name in dict.fromkeys([*context.rules, context.internal_rule, context.tag]):
            await delete_firewall(self.api, name)


def _external_ip(vm: Any) -> str:
    for interface in vm.network_interfaces:
        for config in interface.access_configs:
            if config.nat_i_p:
                return str(config.nat_i_p)
    return ""


def _request_id(name: str, index: int) -> str:
    """A stable UUID per (VM name, attempt): Compute ignores a repeated insert with it."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"skyward:{name}:{index}"))
