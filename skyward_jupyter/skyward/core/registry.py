"""What this kernel has launched: clusters, their nodes and instances, and their states.

The lifecycles write it; the pool, the magics and the cleanup paths read it. An instance
is recorded before its launch call returns and removed only when its destruction is
confirmed, so the registry is always a superset of what is running and billed.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from typing import Any

from ..events import InstanceId, NodeId, NodeInstance
from ..model import ClusterSpec
from .provider import ClusterKeys, Provider

__all__ = ["ClusterRecord", "ClusterState", "InstanceRecord", "Registry"]


class ClusterState(enum.Enum):
    """A cluster's life; transitions only go forward."""

    REQUESTED = "requested"
    PROVISIONING = "provisioning"
    BOOTSTRAPPING = "bootstrapping"
    READY = "ready"
    FAILED = "failed"
    SHUTTING_DOWN = "shutting down"
    DESTROYED = "destroyed"


@dataclass(slots=True)
class InstanceRecord:
    """One launched instance, from its launch until its destruction is confirmed."""

    id: InstanceId
    node: NodeId
    host_public_key: str
    launched_at: float = field(default_factory=time.time)
    node_instance: NodeInstance | None = None
    ready: bool = False
    ledger_key: str = ""


@dataclass(slots=True)
class ClusterRecord:
    """One cluster: its provider, shared resources and instances."""

    id: str
    spec: ClusterSpec
    provider: Provider
    keys: ClusterKeys | None
    request_id: str
    context: Any = None
    state: ClusterState = ClusterState.REQUESTED
    created_at: float = field(default_factory=time.time)
    ready_at: float | None = None
    instances: dict[InstanceId, InstanceRecord] = field(default_factory=dict)

    def require_keys(self) -> ClusterKeys:
        """The cluster's SSH keys (made right after the request; always set by launch)."""
        if self.keys is None:
            raise LookupError(f"cluster {self.id} has no keys yet")
        return self.keys

    def node_instances(self) -> list[NodeInstance]:
        """The bootstrapped nodes, by node id."""
        found = [r.node_instance for r in self.instances.values() if r.ready and r.node_instance]
        return sorted(found, key=lambda ni: ni.node)


class Registry:
    """Clusters by id, and where each instance belongs."""

    def __init__(self) -> None:
        self.clusters: dict[str, ClusterRecord] = {}

    def add(self, record: ClusterRecord) -> None:
        """Track a new cluster."""
        self.clusters[record.id] = record

    def get(self, cluster_id: str) -> ClusterRecord:
        """The cluster with this id (KeyError if unknown)."""
        return self.clusters[cluster_id]

    def instance(self, instance_id: InstanceId) -> tuple[ClusterRecord, InstanceRecord] | None:
        """The cluster and record of an instance, if it is known."""
        for cluster in self.clusters.values():
            record = cluster.instances.get(instance_id)
            if record is not None:
                return cluster, record
        return None

    def by_request(self, request_id: str) -> ClusterRecord | None:
        """The cluster created for a ``ClusterRequested``, once its lifecycle started."""
        for cluster in self.clusters.values():
            if cluster.request_id == request_id:
                return cluster
        return None

    def live(self) -> list[ClusterRecord]:
        """Clusters not yet destroyed."""
        return [c for c in self.clusters.values() if c.state is not ClusterState.DESTROYED]
