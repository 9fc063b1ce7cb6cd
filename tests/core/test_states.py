"""Cluster and node states move only the ways their lives allow."""

import pytest
from skyward.core.registry import (
    ClusterRecord,
    ClusterState,
    IllegalTransition,
    NodeSlot,
    NodeState,
)
from skyward.model import ClusterSpec


def _record() -> ClusterRecord:
    return ClusterRecord("sky-1", ClusterSpec("container"), None, None, "up-1")  # type: ignore[arg-type]


def test_a_cluster_goes_forward_only():
    record = _record()
    for state in (ClusterState.PROVISIONING, ClusterState.READY, ClusterState.SHUTTING_DOWN):
        record.move(state)
    record.move(ClusterState.DESTROYED)
    with pytest.raises(IllegalTransition, match="cluster sky-1 cannot go from destroyed to ready"):
        record.move(ClusterState.READY)
    assert record.state is ClusterState.DESTROYED


def test_a_ready_cluster_cannot_fail_or_provision_again():
    record = _record()
    record.move(ClusterState.PROVISIONING)
    record.move(ClusterState.READY)
    for state in (ClusterState.FAILED, ClusterState.PROVISIONING, ClusterState.REQUESTED):
        with pytest.raises(IllegalTransition):
            record.move(state)


def test_a_node_is_replacing_until_its_replacement_is_ready():
    slot = NodeSlot(1)
    for state in (NodeState.LAUNCHING, NodeState.BOOTSTRAPPING, NodeState.READY):
        slot.move(state)
    slot.move(NodeState.REPLACING)
    slot.move(NodeState.READY)
    slot.move(NodeState.REPLACING)
    slot.move(NodeState.LOST)  # the replacement failed
    with pytest.raises(IllegalTransition, match="node 1 cannot go from lost to ready"):
        slot.move(NodeState.READY)
    slot.move(NodeState.DESTROYED)  # a shutdown reaches every node


def test_a_node_that_never_was_ready_cannot_be_replaced():
    slot = NodeSlot(0)
    slot.move(NodeState.LAUNCHING)
    with pytest.raises(IllegalTransition):
        slot.move(NodeState.REPLACING)
    with pytest.raises(IllegalTransition):
        slot.move(NodeState.READY)
