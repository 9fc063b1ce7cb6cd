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
import logging
import os
import re
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
    no_note,
)
from ...errors import CapacityError, ProvisionError
from ...events import InstanceId, ProviderName
from ...model import ClusterSpec, Instance, Offer
from ..cloud import caller_cidr
from .api import ENDPOINT_ENV, ComputeApi
from .catalog import ATTACHABLE, HOST_KEY_ATTRIBUTE, IMAGES, PRICES, gpu_name, startup_script

__all__ = ["GcpContext", "GcpProvider"]

log = logging.getLogger("skyward")

CLUSTER_LABEL = "skyward-cluster"
NODE_LABEL = "skyward-node"
PREEMPTED_OPERATION = "compute.instances.preempted"
DEFAULT_REGION = "us-central1"
NETWORK = "global/networks/default"
ANYWHERE = {"0.0.0.0/0", "::/0"}
_ZONE = re.compile(r"^[a-z]+-[a-z]+\d+-[a-z]$")
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


@dataclass(frozen=True, slots=True)
class _Attempt:
    """One way to launch a node: a machine type (and attached GPUs) in one zone and market."""

    offer: Offer
    spot: bool
    price: float
    attached: str = ""  # accelerator type attached to an N1 host, if any


@dataclass
class GcpContext:
    """One cluster's firewall rule and where each of its VMs lives."""

    cluster_id: str
    spec: ClusterSpec
    attempts: list[_Attempt]
    zones: list[str]
    firewall: str = ""
    instances: dict[str, _Attempt] = field(default_factory=dict)
    rules: list[str] = field(default_factory=list)  # firewall rules noted, in order
    note: ResourceNote = field(default=no_note, repr=False)

    @property
    def tag(self) -> str:
        return f"skyward-{self.cluster_id}"

    @property
    def internal_rule(self) -> str:
        """The firewall rule admitting the cluster's VMs to each other."""
        return f"{self.tag}-internal"


def _wanted(spec: ClusterSpec) -> str:
    gpus = f"{spec.accelerator or 'any GPU'} x{spec.accelerator_count}"
    what = gpus if spec.accelerator_count else "a CPU machine"
    market = {"always": " (spot)", "never": " (on-demand)"}.get(spec.spot, "")
    cap = f" under ${spec.max_price:.2f}/h" if spec.max_price else ""
    return what + market + cap


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
        for attempt in await self._attempts(spec, await self._zones(spec)):
            found.setdefault((attempt.offer.instance_type, attempt.offer.region), attempt.offer)
        return list(found.values())

    async def _zones(self, spec: ClusterSpec) -> list[str]:
        wanted = spec.region or os.environ.get("CLOUDSDK_COMPUTE_ZONE") or DEFAULT_REGION
        if _ZONE.match(wanted):
            return [wanted]
        pager = await self.api.call(self.api.zones.list, project=self.api.project)
        zones = [
            z.name
            for z in pager
            if z.region.rsplit("/", 1)[-1] == wanted and (z.status or "UP") == "UP"
        ]
        if not zones:
            raise ProvisionError(f"no Google Cloud zone is up in region {wanted}")
        return sorted(zones)

    async def _attempts(self, spec: ClusterSpec, zones: list[str]) -> list[_Attempt]:
        attempts: list[_Attempt] = []
        for zone in zones:
            offers = await self._zone_offers(zone)
            for offer, attached in offers:
                if not _matches(offer, spec):
                    continue
                if spec.spot != "always":
                    attempts.append(_Attempt(offer, False, offer.price_per_hour, attached))
                if spec.spot != "never" and offer.spot_price_per_hour is not None:
                    attempts.append(_Attempt(offer, True, offer.spot_price_per_hour, attached))
        if spec.max_price is not None:
            attempts = [a for a in attempts if a.price <= spec.max_price]
        order = {zone: i for i, zone in enumerate(zones)}
        attempts.sort(key=lambda a: (a.price, order[a.offer.region], a.offer.instance_type))
        return attempts

    async def _zone_offers(self, zone: str) -> list[tuple[Offer, str]]:
        project = self.api.project
        pager = await self.api.call(self.api.machine_types.list, project=project, zone=zone)
        types = {m.name: m for m in pager if m.name in PRICES}
        found: list[tuple[Offer, str]] = []
        for name, machine in types.items():
            on_demand, spot = PRICES[name]
            accelerators = list(machine.accelerators)
            found.append(
                (
                    Offer(
                        provider="gcp",
                        instance_type=name,
                        accelerator=gpu_name(accelerators[0].guest_accelerator_type)
                        if accelerators
                        else None,
                        accelerator_count=sum(a.guest_accelerator_count for a in accelerators),
                        vcpus=float(machine.guest_cpus),
                        memory_gb=round(machine.memory_mb / 1024, 1),
                        price_per_hour=on_demand,
                        spot_price_per_hour=spot,
                        region=zone,
                    ),
                    "",
                )
            )
        if any(host in types for host, _, _ in ATTACHABLE.values()):
            hosts = {o.instance_type: o for o, _ in found}
            pager = await self.api.call(self.api.accelerator_types.list, project=project, zone=zone)
            for accelerator in pager:
                host, counts, prices = ATTACHABLE.get(accelerator.name, ("", (), (0.0, 0.0)))
                if host in hosts:
                    found.extend(
                        (_attached(hosts[host], accelerator.name, n, prices), accelerator.name)
                        for n in counts
                    )
        return found

    # -- cluster resources --------------------------------------------------------------

    async def prepare(
        self, cluster_id: str, spec: ClusterSpec, keys: ClusterKeys, note: ResourceNote = no_note
    ) -> GcpContext:
        """Find the offers, then open SSH to the caller for the cluster's network tag."""
        zones = await self._zones(spec)
        attempts = await self._attempts(spec, zones)
        if not attempts:
            where = zones[0] if len(zones) == 1 else f"zones {', '.join(zones)}"
            raise ProvisionError(f"no Google Cloud machine offers {_wanted(spec)} in {where}")
        context = GcpContext(cluster_id, spec, attempts, zones, note=note)
        cidr = await asyncio.to_thread(caller_cidr, self.endpoint)
        for zone in zones:
            note("zone", zone)  # where teardown looks for the cluster's VMs
        created: list[str] = []
        try:
            for rule in self._firewall_rules(context, cidr):
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
                await asyncio.shield(self._delete_firewall(name))
            raise
        await self._warn_if_ssh_is_open(context)
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
            context.zones = await self._zones(context.spec)

    def _firewall_rules(self, context: GcpContext, cidr: str) -> list[Any]:
        """SSH from the caller only; everything between the cluster's own VMs."""
        c, tag = self.c, context.tag
        return [
            c.Firewall(
                name=tag,
                description=f"skyward cluster {context.cluster_id}: SSH from {cidr} only",
                network=NETWORK,
                direction="INGRESS",
                priority=1000,
                allowed=[c.Allowed(I_p_protocol="tcp", ports=["22"])],
                source_ranges=[cidr],
                target_tags=[tag],
            ),
            c.Firewall(
                name=context.internal_rule,
                description=f"skyward cluster {context.cluster_id}: all traffic between its VMs",
                network=NETWORK,
                direction="INGRESS",
                priority=1000,
                allowed=[c.Allowed(I_p_protocol=p) for p in ("tcp", "udp", "icmp")],
                source_tags=[tag],
                target_tags=[tag],
            ),
        ]

    async def _warn_if_ssh_is_open(self, context: GcpContext) -> None:
        """Say (once, at ``up``) which rules of the network admit SSH from anywhere."""
        from google.api_core import exceptions as gexc

        try:
            pager = await self.api.call(self.api.firewalls.list, project=self.api.project)
            rules = await asyncio.to_thread(list, pager)  # further pages are fetched here
        except (ProvisionError, gexc.GoogleAPICallError) as exc:
            log.info("skyward: gcp: could not list the firewall rules to check SSH: %s", exc)
            return
        found = sorted(r.name for r in rules if _admits_ssh_from_anywhere(r, context.tag))
        if found:
            log.warning(
                "skyward: gcp: network 'default' also admits SSH from anywhere (%s), so the "
                "cluster's rule admitting this machine only protects nothing; narrow it, "
                "e.g. `gcloud compute firewall-rules delete %s`",
                ", ".join(found), found[0],
            )  # fmt: skip

    # -- instances ----------------------------------------------------------------------

    async def launch(self, context: GcpContext, request: LaunchRequest) -> InstanceId:
        """Insert one VM, trying the next offer or zone when Compute has no capacity."""
        from google.api_core import exceptions as gexc

        await self._complete(context)
        if not context.attempts:
            context.attempts = await self._attempts(context.spec, context.zones)
        name = f"{context.cluster_id}-n{request.node_id}-{secrets.token_hex(2)}"
        tried: list[str] = []
        for index, attempt in enumerate(context.attempts):
            zone = attempt.offer.region
            label = _label(attempt)
            instance_id = f"{zone}/{name}"
            try:
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
                await self.api.wait(operation, zone=zone)
            except CapacityError as exc:
                context.instances.pop(instance_id, None)
                tried.append(label)
                nxt = context.attempts[index + 1 : index + 2]
                then = f"trying {_label(nxt[0])}" if nxt else "no other offer left"
                log.warning(
                    "skyward: gcp node %d: %s: %s; %s",
                    request.node_id, label, str(exc).rstrip("."), then,
                )  # fmt: skip
                continue
            if tried:
                log.warning("skyward: gcp node %d launched as %s", request.node_id, label)
            return instance_id
        raise CapacityError(
            f"Google Cloud has no capacity for {_wanted(context.spec)} in "
            f"{', '.join(context.zones)}: tried {', '.join(tried)}"
        )

    def _resource(
        self, context: GcpContext, request: LaunchRequest, attempt: _Attempt, name: str
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
        deadline = time.monotonic() + timeout
        delay = 1.0
        status = "PROVISIONING"
        while True:
            vm = await self._get(instance_id)
            status = vm.status if vm is not None else "PROVISIONING"
            if vm is not None and status == "RUNNING" and _external_ip(vm):
                if await self._reported_host_key(instance_id):
                    return self._instance(context, instance_id, vm)
                status = "RUNNING, startup script not done"
            elif status in ("STOPPING", "TERMINATED", "SUSPENDED"):
                raise ProvisionError(f"GCP instance {instance_id} is {status}")
            if time.monotonic() + delay > deadline:
                raise ProvisionError(
                    f"GCP instance {instance_id} was not ready within {timeout:.0f} s ({status})"
                )
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 5.0)

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
        deadline = time.monotonic() + 600.0
        delay = 0.5
        while await self._get(instance_id) is not None:
            if time.monotonic() + delay > deadline:
                raise ProvisionError(f"GCP instance {instance_id} was not deleted within 600 s")
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 5.0)
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
            await self._delete_firewall(name)

    async def _delete_firewall(self, name: str) -> None:
        from google.api_core import exceptions as gexc

        try:
            operation = await self.api.call(
                self.api.firewalls.delete_unary, project=self.api.project, firewall=name
            )
            await self.api.wait(operation, zone=None)
        except gexc.NotFound:
            return


def _attached(host: Offer, accelerator: str, count: int, prices: tuple[float, float]) -> Offer:
    """An N1 host with ``count`` GPUs of ``accelerator`` attached, priced as the sum."""
    return Offer(
        provider="gcp",
        instance_type=f"{host.instance_type}+{count}x{accelerator}",
        accelerator=gpu_name(accelerator),
        accelerator_count=count,
        vcpus=host.vcpus,
        memory_gb=host.memory_gb,
        price_per_hour=round(host.price_per_hour + count * prices[0], 4),
        spot_price_per_hour=round((host.spot_price_per_hour or 0.0) + count * prices[1], 4),
        region=host.region,
    )


def _admits_ssh_from_anywhere(rule: Any, tag: str) -> bool:
    """Whether a firewall rule lets any address reach tcp/22 of the cluster's VMs.

    Best effort: a deny rule of higher priority that would block it is not weighed.
    """
    if rule.network.rsplit("/", 1)[-1] != NETWORK.rsplit("/", 1)[-1]:
        return False
    if (rule.direction or "INGRESS") != "INGRESS" or rule.disabled:
        return False
    if not ANYWHERE & set(rule.source_ranges):
        return False
    if rule.target_service_accounts:  # our VMs run without a service account
        return False
    if rule.target_tags and tag not in rule.target_tags:
        return False
    return any(_covers_ssh(allowed) for allowed in rule.allowed)


def _covers_ssh(allowed: Any) -> bool:
    protocol = allowed.I_p_protocol.lower()
    if protocol == "all":
        return True
    if protocol not in ("tcp", "6"):
        return False
    if not allowed.ports:
        return True  # every port
    for ports in allowed.ports:
        low, _, high = ports.partition("-")
        if int(low) <= 22 <= int(high or low):
            return True
    return False


def _external_ip(vm: Any) -> str:
    for interface in vm.network_interfaces:
        for config in interface.access_configs:
            if config.nat_i_p:
                return str(config.nat_i_p)
    return ""


def _matches(offer: Offer, spec: ClusterSpec) -> bool:
    if spec.accelerator_count == 0:
        return offer.accelerator_count == 0
    if offer.accelerator_count < spec.accelerator_count:
        return False
    wanted = (spec.accelerator or "").upper()
    have = (offer.accelerator or "").upper()
    return not wanted or have == wanted or have.startswith(wanted + "-")


def _label(attempt: _Attempt) -> str:
    market = "spot" if attempt.spot else "on-demand"
    offer = attempt.offer
    return f"{offer.instance_type} in {offer.region} ({market}, ${attempt.price:.2f}/h)"


def _request_id(name: str, index: int) -> str:
    """A stable UUID per (VM name, attempt): Compute ignores a repeated insert with it."""
    import uuid

    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"skyward:{name}:{index}"))
