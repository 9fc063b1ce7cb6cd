"""The panel's state is a fold of the event stream: replay a recorded real run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from skyward.events import ClusterReady, Log
from skyward.jupyter.panel import eventlog
from skyward.jupyter.panel.state import LogRing, PanelState, apply, replay

DATA = Path(__file__).parent / "data"
FIXTURES = Path(__file__).resolve().parents[2] / "js" / "test" / "fixtures"
RUN = DATA / "two-node-run.jsonl"


@pytest.fixture(scope="module")
def events():
    return eventlog.load(RUN)


def test_the_log_round_trips(events):
    assert eventlog.encode(eventlog.decode(eventlog.encode(events[1][1]))) == eventlog.encode(
        events[1][1]
    )
    kinds = {type(e).__name__ for _, e in events}
    assert {"ClusterRequested", "InstanceBootstrapped", "Log", "Metric"} <= kinds


def test_replay_until_ready(events):
    ready = next(i for i, (_, e) in enumerate(events) if isinstance(e, ClusterReady))
    state = replay(events[: ready + 1])
    assert state.cluster.state == "ready"
    assert state.cluster.provider == "container"
    assert state.cluster.id.startswith("sky-")
    assert sorted(state.nodes) == [0, 1]
    for node in state.nodes.values():
        assert node.state == "ready"
        assert node.instance_id.startswith("ctr-" + state.cluster.id)
        assert node.address.startswith("127.0.0.")
        assert not node.spot
        lines = [text for stream, text in node.log.lines() if stream == "cmd"]
        assert any("pip install tqdm" in line for line in lines)
    assert state.price_per_hour() == 0.0  # the container provider is free


def test_replay_midway_shows_bootstrap_phases(events):
    phases = set()
    state = PanelState()
    for now, event in events:
        apply(state, event, now)
        phases |= {n.phase for n in state.nodes.values() if n.state == "bootstrapping"}
        if state.cluster.state == "ready":
            break
    assert {"connect", "python", "packages", "agent"} <= phases


def test_replay_whole_run(events):
    state = replay(events)
    c = state.cluster
    assert c.state == "destroyed"
    assert c.ended_at is not None and c.ready_at is not None
    assert state.uptime(1e9) == pytest.approx(c.ended_at - c.requested_at)
    assert state.cost(1e9) == 0.0
    assert not state.errors
    for n, node in state.nodes.items():
        assert node.state == "destroyed"
        task = [(s, t) for s, t in node.log.lines() if s in ("stdout", "stderr", "meta")]
        texts = [t for _, t in task]
        assert texts[0].startswith("▶ cell ")
        assert texts[1] == f"hello from node {n}"
        bars = [t for s, t in task if s == "stderr" and "it/s]" in t]
        assert len(bars) == 1 and bars[0].startswith("100%|") and "50/50" in bars[0]
        assert "\x1b[32mgreen\x1b[0m" in texts[3]
        assert texts[-1].startswith("■ ") and " done in " in texts[-1]
        assert list(node.metrics["loss"].v) == [1.0, 0.5, 1 / 3, 0.25, 0.2]
        assert {"cpu_percent", "memory_gb"} <= set(node.metrics)


def test_events_of_a_replaced_instance_are_not_shown(events):
    state = replay(events)
    ni = next(e for _, e in events if isinstance(e, Log)).instance
    from dataclasses import replace

    ghost = replace(ni, instance=replace(ni.instance, id="someone-else"))
    before = state.nodes[ni.node].log.total
    apply(state, Log(ghost, "ghost line"), 0.0)
    assert state.nodes[ni.node].log.total == before


def test_lines_after_a_cell_are_marked_with_it(events):
    from skyward.core.outputs import LogLines
    from skyward.events import TaskStarted

    state = replay(events)
    ni = next(e for _, e in events if isinstance(e, Log)).instance
    apply(state, TaskStarted("t-9", ni, "cell 9"), 0.0)
    apply(state, LogLines(ni, "t-9", (("stdout", "in the cell", False),)), 0.0)
    apply(state, LogLines(ni, None, (("stdout", "late", False),), after="t-9"), 0.0)
    tail = state.nodes[ni.node].log.lines()[-2:]
    assert tail == [("stdout", "in the cell"), ("stdout", "(after cell 9) late")]


# -- the ring ---------------------------------------------------------------------------


def test_ring_is_bounded_and_numbers_rows():
    ring = LogRing(limit=2000)
    for i in range(10_000):
        ring.add("stdout", f"line {i}")
    assert len(ring.rows) == 2000
    assert ring.first == 8000 and ring.total == 10_000
    assert ring.lines()[0] == ("stdout", "line 8000")
    assert len(ring.take_changes()) == 2000


def test_ring_overwrite_is_per_stream():
    ring = LogRing()
    ring.add("stdout", "a")
    ring.add("stderr", "bar 1")
    ring.add("stdout", "b")
    ring.add("stderr", "bar 2", overwrite=True)
    ring.add("stdout", "c", overwrite=True)
    assert ring.lines() == [("stdout", "a"), ("stderr", "bar 2"), ("stdout", "c")]


@pytest.mark.parametrize("case", ["single", "nested", "colour"])
def test_ring_on_real_tqdm_lines(case):
    """The agent's lines for real tqdm output (shared with js/test/logengine.test.ts)."""
    records = json.loads((FIXTURES / "tqdm-records.json").read_text())[case]
    ring = LogRing()
    for stream, line, overwrite in records:
        ring.add(stream, line, overwrite)
        assert len(ring.rows) <= 2
    texts = [t.rstrip() for _, t in ring.lines()]
    if case == "nested":
        assert texts == ["outer: 100%|#################################| 3/3", ""]
    else:
        assert len(texts) == 1 and ("5/5" in texts[0] or "3/3" in texts[0])
        assert texts[0].startswith("100%|")
