"""Sync to the browser: binary metrics, the throttle, deltas that rebuild the state."""

from __future__ import annotations

import asyncio
import time
from array import array
from pathlib import Path

import pytest
from skyward.core.bus import EventBus
from skyward.core.outputs import LogLines
from skyward.events import Metric, NodeInstance
from skyward.jupyter.panel.sync import decode_metrics, encode_metrics
from skyward.model import Instance

FIXTURES = Path(__file__).resolve().parents[2] / "js" / "test" / "fixtures"


def test_metrics_encoding_matches_the_js_fixture():
    data = encode_metrics(
        [
            (0, "cpu_percent", array("d", [100.0, 102.0, 104.5]), array("d", [12.5, 50.0, 99.75])),
            (15, "loss", array("d", [1.5]), array("d", [0.125])),
            (3, "μ-metric", array("d", [7.0, 8.0]), array("d", [-1e-9, 3e300])),
        ]
    )
    assert data == (FIXTURES / "metrics-v1.bin").read_bytes()
    assert decode_metrics(data)[1] == (15, "loss", [1.5], [0.125])
    # 8 bytes a number, not JSON text
    assert len(data) < 16 * 6 + 64


def _node(n: int) -> NodeInstance:
    return NodeInstance(Instance(f"i-{n}", ip="127.0.0.2"), n, "container", "u", "/k")


def lines(node: NodeInstance, *rows: tuple[str, str, bool]) -> LogLines:
    """Lines as the agent client publishes them: one batch per frame (here, per line,
    the worst case for the panel)."""
    return LogLines(node, None, rows)


async def _drained(p, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    shown = [v for n, v in p.state.nodes.items() if n in p.shown]
    while any(v.log.pending for v in shown) or p._throttle.pending:
        assert time.monotonic() < deadline, "the panel did not sync everything"
        await asyncio.sleep(0.02)


class Mirror:
    """What a browser's store makes of the messages (js/src/store.ts, in Python)."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[int, tuple[str, str]]] = {}
        self.points: dict[tuple[int, str], list[float]] = {}
        self.seqs: list[int] = []

    def __call__(self, content, buffers=None) -> None:
        self.seqs.append(content["seq"])
        for node, part in content["logs"].items():
            if part["whole"] or content["kind"] == "snapshot":
                self.rows[node] = {}
            rows = self.rows.setdefault(node, {})
            for n, stream, text in part["rows"]:
                rows[n] = (stream, text)
            for n in [n for n in rows if n < part["first"]]:
                del rows[n]
        if buffers:
            for node, name, _t, v in decode_metrics(buffers[0]):
                self.points.setdefault((node, name), []).extend(v)


def _open(p, *nodes: int, client: str = "page") -> None:
    """A page's store says which panes are open (as js/src/index.ts sends it)."""
    p._handle({"kind": "panes", "client": client, "nodes": list(nodes)}, False)


@pytest.fixture
def panel():
    from skyward.jupyter.panel.widget import Panel

    made = []

    def make(bus):
        p = Panel(bus, asyncio.get_running_loop())
        mirror = Mirror()
        p.widget.send = mirror
        made.append(p)
        return p, mirror

    yield make
    for p in made:
        p.close()


async def test_throttle_10000_logs_in_a_second(panel):
    bus = EventBus()
    p, mirror = panel(bus)
    _open(p, 0, 1)
    nodes = [_node(0), _node(1)]
    syncs = p.stats["syncs"]
    start = time.monotonic()
    for i in range(100):
        for j in range(100):
            k = i * 100 + j
            node = nodes[k % 2]
            stream = "stderr" if k % 10 == 0 else "stdout"
            bus.publish(lines(node, (stream, f"tick {k}", k % 3 == 0)))
        bus.publish(Metric(nodes[0], "cpu_percent", float(i), time.time()))
        await asyncio.sleep(max(0.0, start + (i + 1) / 100 - time.monotonic()))
    elapsed = time.monotonic() - start
    made = p.stats["syncs"] - syncs
    assert made <= 20 * elapsed + 2, (made, elapsed)
    assert made >= 5  # it does sync while events flow, not only at the end
    await _drained(p)  # rows the flood skipped follow at the same pace
    assert p.stats["syncs"] - syncs <= 20 * (time.monotonic() - start) + 2
    assert mirror.seqs == list(range(1, len(mirror.seqs) + 1))
    for node in (0, 1):
        expected = dict(p.state.nodes[node].log.rows)
        assert mirror.rows[str(node)] == expected
    assert mirror.points[(0, "cpu_percent")] == [float(i) for i in range(100)]


async def test_ring_bound_keeps_memory_flat(panel):
    bus = EventBus()
    p, mirror = panel(bus)
    _open(p, 0)
    node = _node(0)
    for i in range(50_000):
        bus.publish(lines(node, ("stdout", f"line {i}", False)))
    await _drained(p)
    ring = p.state.nodes[0].log
    assert len(ring.rows) == 2000 and ring.first == 48_000
    assert len(mirror.rows["0"]) == 2000
    assert min(mirror.rows["0"]) == 48_000


async def test_snapshot_for_a_late_view(panel):
    bus = EventBus()
    p, mirror = panel(bus)
    _open(p, 3)
    node = _node(3)
    for i in range(10):
        bus.publish(lines(node, ("stdout", f"line {i}", False)))
        bus.publish(Metric(node, "loss", 1.0 / (i + 1), float(i)))
    await asyncio.sleep(0.1)
    late = Mirror()
    p.widget.send = late
    p._on_msg(p.widget, {"kind": "snapshot"}, [])
    await asyncio.sleep(0.01)
    assert late.rows["3"] == mirror.rows["3"]
    assert late.points[(3, "loss")] == mirror.points[(3, "loss")]
    assert p.widget.summary["nodes"][0]["metrics"] == ["loss"]


async def test_buttons_are_handed_to_the_loop_from_another_thread(panel):
    bus = EventBus()
    p, _ = panel(bus)
    called = []
    loop = asyncio.get_running_loop()

    async def shutdown():
        called.append(("shutdown", asyncio.get_running_loop() is loop))

    p.actions["shutdown"] = shutdown
    await asyncio.to_thread(p._on_msg, p.widget, {"kind": "shutdown"}, [])
    await asyncio.to_thread(p._on_msg, p.widget, {"kind": "hello", "lab": True}, [])
    for _ in range(20):
        await asyncio.sleep(0.01)
    assert called == [("shutdown", True)]
    assert p.widget.subshells is True and p.frontend["lab"] is True


async def test_rows_go_only_for_open_panes_and_all_of_them_when_one_opens(panel):
    bus = EventBus()
    p, mirror = panel(bus)
    nodes = [_node(n) for n in range(4)]
    for i in range(3000):
        for node in nodes:
            bus.publish(lines(node, ("stdout", f"node {node.node} line {i}", False)))
    bus.publish(Metric(nodes[2], "loss", 0.5, 1.0))
    await _drained(p)
    assert mirror.rows == {}  # every pane closed: no rows, whatever the flood
    assert mirror.points[(2, "loss")] == [0.5]  # the charts show on the rows: points go
    sent = p.stats["bytes"]
    _open(p, 2)
    await _drained(p)
    assert mirror.rows["2"] == dict(p.state.nodes[2].log.rows)  # the pane's whole log
    assert len(mirror.rows["2"]) == 2000 and set(mirror.rows) == {"2"}
    for node in nodes:
        bus.publish(lines(node, ("stdout", f"node {node.node} later", False)))
    await _drained(p)
    assert mirror.rows["2"][p.state.nodes[2].log.total - 1] == ("stdout", "node 2 later")
    assert set(mirror.rows) == {"2"}
    assert p.stats["bytes"] - sent < 2000 * 60  # one pane's rows, not four
    assert mirror.seqs == list(range(1, len(mirror.seqs) + 1))


async def test_panes_of_two_pages(panel):
    bus = EventBus()
    p, mirror = panel(bus)
    node = _node(0)
    bus.publish(lines(node, ("stdout", "first", False)))
    _open(p, 0, client="a")
    await _drained(p)
    assert mirror.rows["0"] == {0: ("stdout", "first")}
    mirror.rows.clear()  # page b's store has no rows yet
    _open(p, 0, client="b")
    await _drained(p)
    assert mirror.rows["0"] == {0: ("stdout", "first")}  # b opening it sends them again
    _open(p, client="a")  # a closes its pane; b's stays open
    bus.publish(lines(node, ("stdout", "second", False)))
    await _drained(p)
    assert mirror.rows["0"][1] == ("stdout", "second")
    _open(p, client="b")
    bus.publish(lines(node, ("stdout", "third", False)))
    await _drained(p)
    assert 2 not in mirror.rows["0"]
    assert p.shown == set()
