"""Destroying what dead kernels left: their instances and their clusters' shared resources.

Each cluster is rebuilt from the ledger (``restore``: no offer, no capacity, no key
needed, nothing created) into a record of this kernel's registry, and then destroyed by
the lifecycle's one destroy path, exactly as a ``%skyward down`` would destroy it.
"""

from __future__ import annotations

from ..events import Error
from .bus import EventBus, respond
from .ledger import Ledger, LedgerEntry, spec_from_dict
from .lifecycle import Lifecycle, ProviderFor, describe
from .registry import ClusterRecord, InstanceRecord
from .requests import OrphansDestroyed, OrphansDestroyRequested

__all__ = ["OrphanCleaner"]


class OrphanCleaner:
    """Answers ``OrphansDestroyRequested`` with ``OrphansDestroyed``."""

    def __init__(
        self, bus: EventBus, ledger: Ledger, provider_for: ProviderFor, lifecycle: Lifecycle
    ) -> None:
        self._bus = bus
        self._ledger = ledger
        self._provider_for = provider_for
        self._lifecycle = lifecycle
        bus.subscribe(OrphansDestroyRequested, self._on_request)

    async def _on_request(self, request: OrphansDestroyRequested) -> None:
        by_cluster: dict[str, list[LedgerEntry]] = {}
        for entry in request.entries:
            by_cluster.setdefault(entry.cluster_id, []).append(entry)
        for leftover in self._ledger.leftovers():
            by_cluster.setdefault(leftover.cluster_id, [])
        failures: list[str] = []
        destroyed = 0
        for cluster_id, group in by_cluster.items():
            try:
                record = self._rebuild(cluster_id, group)
            except Exception as exc:
                failures.append(f"{cluster_id}: {describe(exc)}")
                continue
            if record is None:
                continue
            errors: list[str] = []

            def heard(
                error: Error, heard: list[str] = errors, request: str = record.request_id
            ) -> None:
                if error.request_id == request:
                    heard.append(error.message)

            unsubscribe = self._bus.subscribe(Error, heard)
            try:
                await self._restore(record)
                count = len(record.instances)
                await self._lifecycle.destroy_cluster(record)
            except Exception as exc:
                errors.append(describe(exc))
                count = 0
            finally:
                unsubscribe()
            destroyed += count - len(record.instances)
            failures.extend(f"{cluster_id}: {message}" for message in errors)
        respond(self._bus, request, OrphansDestroyed(destroyed, tuple(failures)))

    def _rebuild(self, cluster_id: str, group: list[LedgerEntry]) -> ClusterRecord | None:
        noted = self._ledger.cluster(cluster_id)
        origin = group[0] if group else noted  # each names the provider and the spec
        if origin is None:
            return None
        spec = spec_from_dict(origin.spec)
        provider = self._provider_for(origin.provider, spec)
        record = ClusterRecord(cluster_id, spec, provider, None, f"orphans-{cluster_id}")
        for entry in group:
            if entry.instance_id:
                record.instances[entry.instance_id] = InstanceRecord(
                    entry.instance_id, entry.node, entry.host_public_key, ledger_key=entry.key
                )
            else:  # a launch its dead kernel never saw end: nothing to destroy is known
                self._ledger.remove(entry.key)
        return record

    async def _restore(self, record: ClusterRecord) -> None:
        noted = self._ledger.cluster(record.id)
        resources = noted.resources if noted is not None else {}
        record.context = await record.provider.restore(record.id, record.spec, resources)
