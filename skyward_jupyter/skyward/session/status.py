"""What ``%skyward status`` shows: the current cluster and each of its nodes."""

from __future__ import annotations

from dataclasses import dataclass

from ..core.registry import ClusterRecord, ClusterState, InstanceRecord, NodeState

__all__ = ["ClusterStatus", "Destroyed", "NodeStatus", "cluster_status"]


@dataclass(frozen=True, slots=True)
class NodeStatus:
    """One node as ``%skyward status`` shows it."""

    node: int
    state: NodeState
    instance_id: str
    address: str
    price_per_hour: float
    reason: str = ""


@dataclass(frozen=True, slots=True)
class ClusterStatus:
    """The current cluster as ``%skyward status`` shows it."""

    id: str
    name: str
    provider: str
    state: ClusterState
    nodes: int
    created_at: float
    node_rows: tuple[NodeStatus, ...]


@dataclass(frozen=True, slots=True)
class Destroyed:
    """What ``%skyward down`` destroyed: the instances it had, and those left (errors)."""

    cluster_id: str
    instances: int
    left: int
    seconds: float


def cluster_status(record: ClusterRecord) -> ClusterStatus:
    """A snapshot of ``record``: its state and one row per node id."""
    rows = []
    for node, slot in sorted(record.nodes.items()):
        inst = record.instances.get(slot.instance_id or "")
        rows.append(_node_status(node, slot.state, slot.reason, inst))
    return ClusterStatus(
        record.id,
        record.spec.name,
        record.provider.name,
        record.state,
        record.spec.nodes,
        record.created_at,
        tuple(rows),
    )


def _node_status(
    node: int, state: NodeState, reason: str, inst: InstanceRecord | None
) -> NodeStatus:
    ni = inst.node_instance if inst is not None else None
    address = f"{ni.instance.ip}:{ni.instance.ssh_port}" if ni else "-"
    price = ni.instance.offer.price_per_hour if ni and ni.instance.offer else 0.0
    return NodeStatus(node, state, inst.id if inst else "-", address, price, reason)
