"""A node being replaced shows as ``replacing`` until its new instance is bootstrapped."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from skyward import events as ev
from skyward.jupyter.panel import eventlog
from skyward.jupyter.panel.state import PanelState, apply, replay

RUN = Path(__file__).parent / "data" / "two-node-run.jsonl"


@pytest.fixture
def ready() -> tuple[PanelState, ev.NodeInstance]:
    """The recorded two-node run replayed until its cluster is ready, and node 1."""
    events = eventlog.load(RUN)
    end = next(i for i, (_, e) in enumerate(events) if isinstance(e, ev.ClusterReady))
    state = replay(events[: end + 1])
    node = next(
        e.instance
        for _, e in events[:end]
        if isinstance(e, ev.InstanceBootstrapped) and e.instance.node == 1
    )
    return state, node


def _replacement(state: PanelState, old: ev.NodeInstance) -> tuple[list, ev.NodeInstance]:
    """What the core publishes when ``old`` is lost and replaced, in order."""
    new = replace(old, instance=replace(old.instance, id=old.instance.id + "-b", ip="127.0.0.9"))
    rid = f"r/replace-{old.node}"
    cid = state.cluster.id
    return [
        ev.InstancePreempted(old, "spot interruption"),
        ev.InstanceRequested(rid, "container", cid, old.node, replacing=old.instance.id),
        ev.InstanceDestroyed(old.instance.id),  # the lost node's remains
        ev.InstanceLaunched(rid, cid, old.node, "container", new.instance.id),
        ev.InstanceRunning(rid, cid, old.node, "container", new.instance),
        ev.InstanceProvisioned(rid, new),
        ev.BootstrapRequested(rid, new, cid),
        ev.BootstrapPhase(new, "started", "connect"),
        ev.BootstrapPhase(new, "completed", "connect"),
        ev.BootstrapPhase(new, "started", "packages"),
        ev.InstanceBootstrapped(new),
        ev.InstanceReplaced(rid, old.instance.id, new),
    ], new


def test_replacing_until_the_new_instance_is_bootstrapped(ready):
    state, old = ready
    sequence, new = _replacement(state, old)
    seen = []
    for i, event in enumerate(sequence):
        apply(state, event, 1000.0 + i)
        view = state.nodes[1]
        seen.append((type(event).__name__, view.state, view.phase))
    assert seen[0] == ("InstancePreempted", "preempted", "")
    bootstrapped = [kind for kind, _, _ in seen].index("InstanceBootstrapped")
    for kind, shown, _ in seen[1:bootstrapped]:
        assert shown == "replacing", (kind, seen)
    phases = [phase for _, _, phase in seen[1:bootstrapped]]
    assert phases == [
        "requested",
        "requested",
        "launched",
        "running",
        "provisioned",
        "bootstrapping",
        "connect",
        "connect",
        "packages",
    ]
    view = state.nodes[1]
    assert (view.state, view.phase) == ("ready", "")
    assert view.instance_id == new.instance.id
    assert view.address.startswith("127.0.0.9:")
    assert view.note == f"replaced {old.instance.id}"
    assert view.replaced == [old.instance.id]
    assert state.nodes[0].state == "ready"  # the other node is untouched


def test_replaced_before_bootstrapped_still_shows_replacing(ready):
    state, old = ready
    sequence, new = _replacement(state, old)
    done = next(e for e in sequence if isinstance(e, ev.InstanceBootstrapped))
    early = [e for e in sequence if e is not done]
    for event in early:
        apply(state, event, 1000.0)
    assert state.nodes[1].state == "replacing"
    apply(state, done, 1001.0)
    assert state.nodes[1].state == "ready"


def test_a_failed_replacement_fails_the_node(ready):
    state, old = ready
    sequence, _ = _replacement(state, old)
    for event in sequence[:4]:
        apply(state, event, 1000.0)
    assert state.nodes[1].state == "replacing"
    apply(state, ev.Error("r/replace-1", "node 1: no capacity"), 1001.0)
    view = state.nodes[1]
    assert (view.state, view.note) == ("failed", "node 1: no capacity")
