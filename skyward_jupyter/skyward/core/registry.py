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

__all__ = [
    "ClusterRecord",
    "ClusterState",
    "IllegalTransition",
    "InstanceRecord",
    "NodeSlot",
    "NodeState",
    "Registry",
]


class IllegalTransition(RuntimeError):
    """A state change that the life of a cluster or node does not allow (a bug)."""


class ClusterState(enum.Enum):
    """A cluster's life; transitions only go forward (see ``_CLUSTER_MOVES``)."""

    REQUESTED = "requested"
    PROVISIONING = "provisioning"
    READY = "ready"
    FAILED = "failed"
    SHUTTING_DOWN = "shutting down"
    DESTROYED = "destroyed"


class NodeState(enum.Enum):
    """One node of a cluster (a place that instances fill in turn), as the user sees it.

    A node whose instance is lost is ``replacing`` until the new instance is bootstrapped
    under the same node id, or ``lost`` when it is not replaced (``--no-replace``, or the
    replacement failed).
    """

    REQUESTED = "requested"  # then launching, or bootstrapping when attached (no launch)
    LAUNCHING = "launching"
    BOOTSTRAPPING = "bootstrapping"
    READY = "ready"
    REPLACING = "replacing"
    LOST = "lost"
    FAILED = "failed"
    DESTROYED = "destroyed"


_CLUSTER_MOVES: dict[ClusterState, frozenset[ClusterState]] = {
    ClusterState.REQUESTED: frozenset(
        {ClusterState.PROVISIONING, ClusterState.FAILED, ClusterState.SHUTTING_DOWN}
    ),
    ClusterState.PROVISIONING: frozenset(
        {ClusterState.READY, ClusterState.FAILED, ClusterState.SHUTTING_DOWN}
    ),
    ClusterState.READY: frozenset({ClusterState.SHUTTING_DOWN}),
    ClusterState.FAILED: frozenset({ClusterState.SHUTTING_DOWN}),
    ClusterState.SHUTTING_DOWN: frozenset({ClusterState.DESTROYED}),
    ClusterState.DESTROYED: frozenset(),
}

_NODE_MOVES: dict[NodeState, frozenset[NodeState]] = {
    NodeState.REQUESTED: frozenset(
        {NodeState.LAUNCHING, NodeState.BOOTSTRAPPING, NodeState.FAILED}
    ),
    NodeState.LAUNCHING: frozenset({NodeState.BOOTSTRAPPING, NodeState.FAILED}),
    NodeState.BOOTSTRAPPING: frozenset({NodeState.READY, NodeState.FAILED}),
    NodeState.READY: frozenset({NodeState.REPLACING, NodeState.LOST}),
    NodeState.REPLACING: frozenset({NodeState.READY, NodeState.LOST}),
    NodeState.LOST: frozenset(),
    NodeState.FAILED: frozenset(),
    NodeState.DESTROYED: frozenset(),
}


def _check(moves: dict[Any, frozenset[Any]], what: str, old: Any, new: Any) -> None:
    if new is not old and new not in moves[old]:
        raise IllegalTransition(f"{what} cannot go from {old.value} to {new.value}")


@dataclass(slots=True)
class NodeSlot:
    """One node id of a cluster: its state and the instance that fills it now."""

    node: NodeId
    instance_id: InstanceId | None = None
    reason: str = ""
    """Why the node is replacing or lost (the provider's or the channel's words)."""
    _state: NodeState = NodeState.REQUESTED

    @property
    def state(self) -> NodeState:
        return self._state

    def move(self, new: NodeState) -> None:
        """Change state; raises :class:`IllegalTransition` for one its life does not allow.

        Every state may end in ``destroyed`` (a shutdown reaches each node wherever it is).
        """
        if new is not NodeState.DESTROYED:
            _check(_NODE_MOVES, f"node {self.node}", self._state, new)
        self._state = new


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
    provider: Provider[Any]
    keys: ClusterKeys | None
    request_id: str
    context: Any = None
    created_at: float = field(default_factory=time.time)
    ready_at: float | None = None
    instances: dict[InstanceId, InstanceRecord] = field(default_factory=dict)
    nodes: dict[NodeId, NodeSlot] = field(default_factory=dict)
    _state: ClusterState = ClusterState.REQUESTED

    @property
    def state(self) -> ClusterState:
        return self._state

    def move(self, new: ClusterState) -> None:
        """Change state; raises :class:`IllegalTransition` for one that goes back."""
        _check(_CLUSTER_MOVES, f"cluster {self.id}", self._state, new)
        self._state = new

    def slot(self, node: NodeId) -> NodeSlot:
        """The node ``node`` of this cluster (made on first use, ``requested``)."""
        return self.nodes.setdefault(node, NodeSlot(node))

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
