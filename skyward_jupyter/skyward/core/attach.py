"""Taking over a cluster started with ``--keep`` by a kernel that is gone.

Its instances, keys and host keys come from the ledger; each agent (which outlived the
old kernel) is reached again through the node channels, and the cluster becomes this
kernel's. The facts a ``ClusterRequested`` would have published for its nodes
(``InstanceProvisioned``, ``InstanceBootstrapped``, then ``ClusterReady``) are published
once each, so the panel and the watch see an attached cluster like any other.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from ..errors import SkywardError
from ..events import (
    ClusterReady,
    Error,
    InstanceBootstrapped,
    InstanceProvisioned,
    NodeInstance,
)
from ..model import Cluster, Instance, Offer
from .bus import EventBus, respond
from .channels import NodeChannels
from .ledger import KernelIdentity, Ledger, cluster_key, spec_from_dict
from .lifecycle import ProviderFor, describe, resource_note
from .provider import ClusterKeys
from .registry import ClusterRecord, ClusterState, InstanceRecord, NodeState, Registry
from .requests import AttachRequested

__all__ = ["Attacher"]


class Attacher:
    """Answers ``AttachRequested`` with ``ClusterReady`` (or ``Error``)."""

    def __init__(
        self,
        bus: EventBus,
        registry: Registry,
        ledger: Ledger,
        provider_for: ProviderFor,
        channels: NodeChannels,
    ) -> None:
        self._bus = bus
        self._registry = registry
        self._ledger = ledger
        self._provider_for = provider_for
        self._channels = channels
        bus.subscribe(AttachRequested, self._on_attach_requested)

    async def _on_attach_requested(self, request: AttachRequested) -> None:
        try:
            record = await self._attach(request)
        except Exception as exc:
            respond(self._bus, request, Error(request.request_id, describe(exc), fatal=True))
            return
        nodes = record.node_instances()
        for node in nodes:
            self._bus.publish(InstanceProvisioned(record.request_id, node))
            self._bus.publish(InstanceBootstrapped(node))
        cluster = Cluster(record.id, record.provider.name, record.spec, tuple(nodes))
        respond(self._bus, request, ClusterReady(cluster))

    async def _attach(self, request: AttachRequested) -> ClusterRecord:
        name = request.name
        entries = [
            e
            for e in self._ledger.entries()
            if name in (e.cluster_id, e.spec.get("name")) and e.instance_id
        ]
        if not entries:
            raise SkywardError(f"no cluster {name!r} in the ledger")
        alive = [e for e in entries if e.kernel.alive()]
        if alive and alive[0].kernel_pid != KernelIdentity.current().pid:
            raise SkywardError(
                f"cluster {name} belongs to a running kernel (pid {alive[0].kernel_pid})"
            )
        first = entries[0]
        spec = spec_from_dict(first.spec)
        provider = self._provider_for(first.provider, spec)
        public = await asyncio.to_thread(_read_public_key, first.key_path)
        keys = ClusterKeys(first.key_path, public)
        record = ClusterRecord(first.cluster_id, spec, provider, keys, request.request_id)
        noted = self._ledger.cluster(record.id)
        if noted is None:  # launched by a version that kept no cluster records
            self._ledger.begin_cluster(first.provider, record.id, spec, first.keep, first.key_path)
        record.move(ClusterState.PROVISIONING)
        # Rebuilt from the ledger: nothing of the live cluster (rules, keys) is touched.
        record.context = await provider.restore(
            record.id,
            spec,
            noted.resources if noted is not None else {},
            resource_note(self._ledger, record.id),
        )
        for entry in entries:
            instance = Instance(
                entry.instance_id or "",
                "running",
                entry.ip,
                entry.private_ip,
                entry.ssh_port,
                offer=Offer(first.provider, "", price_per_hour=entry.price_per_hour),
            )
            node = NodeInstance(instance, entry.node, provider.name, entry.ssh_user, entry.key_path)
            record.instances[instance.id] = InstanceRecord(
                instance.id,
                entry.node,
                entry.host_public_key,
                entry.launched_at,
                node,
                ready=True,
                ledger_key=entry.key,
            )
            slot = record.slot(entry.node)
            slot.instance_id = instance.id
            slot.move(NodeState.BOOTSTRAPPING)
        self._registry.add(record)
        await asyncio.gather(
            *(
                self._channels.attach(r.node_instance, r.host_public_key, record)
                for r in record.instances.values()
                if r.node_instance is not None
            )
        )
        self._ledger.adopt([e.key for e in entries] + [cluster_key(record.id)])
        for slot in record.nodes.values():
            slot.move(NodeState.READY)
        record.move(ClusterState.READY)
        return record


def _read_public_key(private_key_path: str) -> str:
    """The public line beside a cluster's private key ("" if it is gone)."""
    public = Path(private_key_path + ".pub")
    return public.read_text().strip() if public.exists() else ""
