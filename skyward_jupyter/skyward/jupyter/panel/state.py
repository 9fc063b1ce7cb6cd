"""The panel's state as a pure fold of the event stream.

``apply(state, event, now)`` folds one event into a :class:`PanelState`; ``replay(events)``
folds a whole recorded log. No I/O, no widgets, no clock of its own (``now`` is given), so
a recorded event log replays into exactly the state the live panel had.

Log lines are kept per node in a bounded :class:`LogRing` that applies ``overwrite`` the
way ``jupyter/output.py`` does (it replaces the previous line of the same stream) and also
follows ``ESC[A`` (cursor up, what tqdm writes to redraw several bars), so a progress bar
stays one row however often it is redrawn, and memory stays flat however long a run is.
"""

from __future__ import annotations

import re
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ...core.outputs import LogLines, WorkerCrashed
from ...events import (
    BootstrapCommand,
    BootstrapFailed,
    BootstrapPhase,
    BootstrapRequested,
    ClusterDestroyed,
    ClusterProvisioned,
    ClusterReady,
    ClusterRequested,
    ConsoleOutput,
    Error,
    InstanceBootstrapped,
    InstanceDestroyed,
    InstanceLaunched,
    InstancePreempted,
    InstanceProvisioned,
    InstanceReplaced,
    InstanceRequested,
    InstanceRunning,
    Log,
    Metric,
    NodeInstance,
    ShutdownRequested,
    TaskCompleted,
    TaskStarted,
)
from ...model import Instance

__all__ = [
    "CLUSTER_STATES",
    "LOG_LINES",
    "METRIC_POINTS",
    "ClusterView",
    "ErrorView",
    "LogRing",
    "MetricSeries",
    "NodeView",
    "PanelState",
    "apply",
    "replay",
]

LOG_LINES = 2000
"""Rows kept per node (bootstrap console and task output together)."""
METRIC_POINTS = 1000
"""Points kept per node and metric."""
MAX_ERRORS = 20

CLUSTER_STATES = (
    "requested",
    "provisioning",
    "bootstrapping",
    "ready",
    "shutting down",
    "destroyed",
)
_UP = re.compile(r"\x1b\[(\d*)A")


class LogRing:
    """A node's last ``limit`` rows, with absolute row numbers and per-stream cursors.

    The lines are those the agent sends: ``overwrite`` marks a line that replaces the
    stream's previous line (a provisional line finished, or a ``\\r`` redraw). Plain
    lines go to the next row of their stream: a new row at the bottom, or the row below
    the cursor after a cursor-up. ``ESC[nA`` in a line (tqdm redrawing several bars)
    moves the stream's cursor up ``n`` of its rows once the line is written, and the
    escape is removed from the text. An overwrite after a cursor-up redraws the row the
    cursor is on, unless it repeats the previous line (the agent finishing it).
    """

    __slots__ = ("_changed", "_cursor", "_last", "_newest", "_next", "limit", "rows")

    def __init__(self, limit: int = LOG_LINES) -> None:
        self.limit = limit
        self.rows: dict[int, tuple[str, str]] = {}
        self._next = 0
        self._cursor: dict[str, int] = {}
        self._last: dict[str, tuple[int, str]] = {}
        self._newest: dict[str, int] = {}  # each stream's newest row
        self._changed: set[int] = set()

    @property
    def first(self) -> int:
        """The number of the oldest row kept (``total`` when empty): rows are numbered in
        order and only the oldest go, so those kept are the last ``len(rows)``."""
        return self._next - len(self.rows)

    @property
    def total(self) -> int:
        """Rows ever made (the number the next new row gets)."""
        return self._next

    def add(self, stream: str, line: str, overwrite: bool = False) -> None:
        """Write one line of ``stream``."""
        ups = 0
        text = line
        if "\x1b[" in line and "A" in line:
            for match in _UP.finditer(line):
                ups += int(match.group(1) or 1)
            text = _UP.sub("", line)
        rows = self.rows
        cursor = self._cursor.get(stream)
        if cursor is not None and cursor not in rows:
            cursor = None
        target: int | None = None
        if overwrite and cursor is not None:
            last = self._last.get(stream)
            target = last[0] if last is not None and last[1] == line and last[0] in rows else cursor
        elif cursor is not None:
            target = self._below(stream, cursor)
        if target is None:
            target = self._next
            self._next += 1
            self._newest[stream] = target
        rows[target] = (stream, text)
        self._changed.add(target)
        self._last[stream] = (target, line)
        self._cursor[stream] = self._above(stream, target, ups) if ups else target
        self._trim()

    def add_lines(self, lines: Sequence[tuple[str, str, bool]], mark: str = "") -> None:
        """Write a batch of lines (each ``(stream, text, overwrite)``, ``mark`` before
        each text), as ``add`` would one by one.

        The common batch (plain lines, each stream's cursor on its newest row) makes one
        new row per line: those are written at once, and of a batch longer than the ring
        only the rows it keeps are made.
        """
        cursor, newest = self._cursor, self._newest
        plain = not any(overwrite or "\x1b[" in text for _, text, overwrite in lines)
        if not plain or any(
            cursor.get(s) is not None and cursor.get(s) != newest.get(s)
            for s in {stream for stream, _, _ in lines}
        ):
            for stream, text, overwrite in lines:
                self.add(stream, mark + text, overwrite)
            return
        start, count = self._next, len(lines)
        skipped = max(0, count - self.limit)
        rows = self.rows
        if skipped:
            rows.clear()
            self._changed.clear()
        for i in range(skipped, count):
            stream, text, _ = lines[i]
            rows[start + i] = (stream, mark + text)
        self._changed.update(range(start + skipped, start + count))
        self._next = start + count
        done: set[str] = set()
        for i in range(count - 1, -1, -1):
            stream, text, _ = lines[i]
            if stream not in done:
                done.add(stream)
                cursor[stream] = newest[stream] = start + i
                self._last[stream] = (start + i, mark + text)
        self._trim()

    def _trim(self) -> None:
        rows = self.rows
        while len(rows) > self.limit:
            oldest = self._next - len(rows)
            del rows[oldest]
            self._changed.discard(oldest)

    def _below(self, stream: str, row: int) -> int | None:
        rows = self.rows
        for index in range(row + 1, self._next):
            entry = rows.get(index)
            if entry is not None and entry[0] == stream:
                return index
        return None

    def _above(self, stream: str, row: int, count: int) -> int:
        rows, first = self.rows, self.first
        index = row
        while count and index > first:
            index -= 1
            entry = rows.get(index)
            if entry is not None and entry[0] == stream:
                row = index
                count -= 1
        return row

    def lines(self) -> list[tuple[str, str]]:
        """The rows kept, oldest first, as ``(stream, text)``."""
        return list(self.rows.values())

    @property
    def pending(self) -> int:
        """Rows written and not taken yet."""
        return len(self._changed)

    def take_changes(self, limit: int | None = None) -> list[tuple[int, str, str]]:
        """Rows written since they were last taken, as ``(number, stream, text)``, in order:
        the newest ``limit`` of them (the others stay pending for the next call)."""
        rows = self.rows
        changed = sorted(i for i in self._changed if i in rows)
        if limit is not None and len(changed) > limit:
            changed = changed[-limit:]
            self._changed.difference_update(changed)
        else:
            self._changed.clear()
        return [(i, *rows[i]) for i in changed]

    def snapshot(self) -> list[tuple[int, str, str]]:
        """Every row kept, as ``(number, stream, text)``."""
        return [(i, stream, text) for i, (stream, text) in self.rows.items()]


class MetricSeries:
    """One metric of one node: the last ``limit`` points, and how many are new."""

    __slots__ = ("fresh", "limit", "t", "v")

    def __init__(self, limit: int = METRIC_POINTS) -> None:
        self.limit = limit
        self.t = array("d")
        self.v = array("d")
        self.fresh = 0

    def add(self, timestamp: float, value: float) -> None:
        """Append a point (dropping the oldest beyond ``limit``)."""
        self.t.append(timestamp)
        self.v.append(value)
        if len(self.t) > self.limit * 2:
            del self.t[: -self.limit]
            del self.v[: -self.limit]
        self.fresh = min(self.fresh + 1, self.limit)

    def points(self) -> tuple[array, array]:
        """Every point kept, oldest first."""
        return self.t[-self.limit :], self.v[-self.limit :]

    def take_fresh(self) -> tuple[array, array]:
        """The points added since the last call."""
        n, self.fresh = self.fresh, 0
        if not n:
            return array("d"), array("d")
        return self.t[-n:], self.v[-n:]


@dataclass(slots=True)
class NodeView:
    """One row of the panel."""

    node: int
    instance_id: str = ""
    state: str = "requested"
    phase: str = ""
    address: str = ""
    spot: bool = False
    accelerator: str = ""
    instance_type: str = ""
    price_per_hour: float = 0.0
    task: str = ""
    note: str = ""
    started_at: float | None = None
    ended_at: float | None = None
    replaced: list[str] = field(default_factory=list)
    log: LogRing = field(default_factory=LogRing)
    metrics: dict[str, MetricSeries] = field(default_factory=dict)

    def cost(self, now: float) -> float:
        """USD spent on this node's instances so far."""
        if self.started_at is None or not self.price_per_hour:
            return 0.0
        end = self.ended_at if self.ended_at is not None else now
        return max(0.0, end - self.started_at) / 3600.0 * self.price_per_hour


@dataclass(slots=True)
class ClusterView:
    """The cluster line of the panel."""

    id: str = ""
    name: str = ""
    provider: str = ""
    request_id: str = ""
    state: str = ""
    nodes: int = 0
    requested_at: float | None = None
    ready_at: float | None = None
    ended_at: float | None = None


@dataclass(frozen=True, slots=True)
class ErrorView:
    """One ``Error`` event, for the banner."""

    message: str
    fatal: bool
    at: float


@dataclass(slots=True)
class PanelState:
    """Everything the panel shows: the latest cluster, its nodes and the errors seen."""

    cluster: ClusterView = field(default_factory=ClusterView)
    nodes: dict[int, NodeView] = field(default_factory=dict)
    errors: list[ErrorView] = field(default_factory=list)
    node_of: dict[str, int] = field(default_factory=dict)
    task_names: dict[str, str] = field(default_factory=dict)
    events: int = 0

    def node(self, node: int) -> NodeView:
        """The row of ``node`` (made on first use)."""
        view = self.nodes.get(node)
        if view is None:
            view = self.nodes[node] = NodeView(node)
        return view

    def price_per_hour(self) -> float:
        """The cluster's price now: the sum over its live nodes."""
        return sum(n.price_per_hour for n in self.nodes.values() if n.ended_at is None)

    def cost(self, now: float) -> float:
        """USD spent so far on every instance of the cluster."""
        return sum(n.cost(now) for n in self.nodes.values())

    def uptime(self, now: float) -> float:
        """Seconds since the cluster was requested (until it was destroyed)."""
        start = self.cluster.requested_at
        if start is None:
            return 0.0
        end = self.cluster.ended_at if self.cluster.ended_at is not None else now
        return max(0.0, end - start)


def _own(state: PanelState, ni: NodeInstance) -> NodeView | None:
    """The row of a node-bound event, unless it comes from another instance of the node
    (one that was replaced)."""
    view = state.node(ni.node)
    return view if view.instance_id in ("", ni.instance.id) else None


def _bind(view: NodeView, inst: Instance) -> None:
    view.address = f"{inst.ip}:{inst.ssh_port}" if inst.ip else view.address
    view.spot = inst.spot
    offer = inst.offer
    if offer is not None:
        view.instance_type = offer.instance_type
        if offer.accelerator:
            count = f"{offer.accelerator_count}× " if offer.accelerator_count > 1 else ""
            view.accelerator = f"{count}{offer.accelerator}"
        price = offer.spot_price_per_hour if inst.spot else offer.price_per_hour
        view.price_per_hour = float(price or offer.price_per_hour or 0.0)


def _advance(cluster: ClusterView, to: str) -> None:
    """Move the cluster's state forward (never back) along ``CLUSTER_STATES``."""
    if cluster.state not in CLUSTER_STATES or (
        CLUSTER_STATES.index(to) > CLUSTER_STATES.index(cluster.state)
    ):
        cluster.state = to


def apply(state: PanelState, event: Any, now: float) -> PanelState:
    """Fold one event into ``state`` (in place) and return it; ``now`` is the event's time."""
    state.events += 1
    kind = type(event)
    if kind is LogLines:  # the hot path: most of what happens is lines
        view = _own(state, event.instance)
        if view is not None:
            mark = ""
            if event.task_id is None and event.after is not None:  # a thread, after its cell
                mark = f"(after {state.task_names.get(event.after, event.after)}) "
            view.log.add_lines(event.lines, mark)
        return state
    if kind is WorkerCrashed:
        view = _own(state, event.instance)
        if view is not None:
            view.log.add("meta", f"✗ {event.crash.detail} (a fresh process runs the next cell)")
        return state
    if kind is Log:
        view = _own(state, event.instance)
        if view is not None:
            view.log.add(event.stream, event.line, event.overwrite)
        return state
    cluster = state.cluster
    match event:
        case ClusterRequested(request_id=rid, provider=provider, spec=spec):
            state.cluster = ClusterView(
                name=spec.name,
                provider=provider,
                request_id=rid,
                state="requested",
                nodes=spec.nodes,
                requested_at=now,
            )
            state.nodes = {n: NodeView(n) for n in range(spec.nodes)}
            state.node_of = {}
            state.errors = []
        case ClusterProvisioned(cluster_id=cid):
            cluster.id = cid
            _advance(cluster, "provisioning")
        case InstanceRequested(node_id=node, cluster_id=cid, replacing=old):
            if not cluster.id:
                cluster.id = cid
            view = state.node(node)
            if old is not None:
                view.state, view.note = "replacing", f"replacing {old}"
            elif not view.instance_id:
                view.state = "requested"
        case InstanceLaunched(node_id=node, instance_id=iid):
            view = state.node(node)
            if view.instance_id and view.instance_id != iid:
                view.replaced.append(view.instance_id)
            state.node_of[iid] = node
            view.instance_id, view.state, view.phase = iid, "launched", ""
            view.started_at, view.ended_at = now, None
        case InstanceRunning(node_id=node, instance=inst):
            view = state.node(node)
            if view.instance_id in ("", inst.id):
                view.instance_id = inst.id
                state.node_of[inst.id] = node
                view.state = "running"
                _bind(view, inst)
        case InstanceProvisioned(instance=ni):
            view = _own(state, ni)
            if view is not None:
                view.state = "provisioned"
                _bind(view, ni.instance)
        case BootstrapRequested(instance=ni):
            _advance(cluster, "bootstrapping")
            view = _own(state, ni)
            if view is not None:
                view.state = "bootstrapping"
        case BootstrapPhase(instance=ni, event=kind, phase=phase, error=error):
            view = _own(state, ni)
            if view is not None:
                if kind == "started":
                    view.state, view.phase = "bootstrapping", phase
                elif kind == "failed":
                    view.state, view.phase = "failed", phase
                    view.note = error or ""
        case BootstrapCommand(instance=ni, command=command):
            view = _own(state, ni)
            if view is not None:
                view.log.add("cmd", "$ " + command)
        case ConsoleOutput(instance=ni, content=text, stream=stream, overwrite=overwrite):
            view = _own(state, ni)
            if view is not None:
                view.log.add("console-" + stream, text, overwrite)
        case BootstrapFailed(instance=ni, phase=phase, error=error):
            view = _own(state, ni)
            if view is not None:
                view.state, view.phase = "failed", phase
                view.note = error.partition("\n")[0]
        case InstanceBootstrapped(instance=ni):
            view = _own(state, ni)
            if view is not None:
                view.state, view.phase = "ready", ""
                _bind(view, ni.instance)
        case ClusterReady(cluster=ready):
            cluster.id = ready.id
            cluster.ready_at = now
            _advance(cluster, "ready")
        case TaskStarted(task_id=task, instance=ni, function_name=name):
            view = _own(state, ni)
            state.task_names[task] = name
            if view is not None:
                view.state, view.task = "busy", task
                view.log.add("meta", f"▶ {name} {task}")
        case TaskCompleted(task_id=task, instance=ni, duration=took, success=ok, error=err):
            view = _own(state, ni)
            if view is not None:
                if view.state == "busy" and view.task == task:
                    view.state, view.task = "ready", ""
                outcome = "done" if ok else f"failed: {err}"
                view.log.add("meta", f"■ {task} {outcome} in {took:.1f} s")
        case Metric(instance=ni, name=name, value=value, timestamp=stamp):
            view = _own(state, ni)
            if view is not None:
                series = view.metrics.get(name)
                if series is None:
                    series = view.metrics[name] = MetricSeries()
                series.add(stamp, value)
        case InstancePreempted(instance=ni, reason=reason):
            view = _own(state, ni)
            if view is not None:
                view.state, view.note = "preempted", reason
                view.ended_at = now
        case InstanceReplaced(old_id=old, new=ni):
            view = state.node(ni.node)
            state.node_of[ni.instance.id] = ni.node
            if old not in view.replaced:
                view.replaced.append(old)
            view.instance_id = ni.instance.id
            view.note = f"replaced {old}"
            if view.state not in ("ready", "busy"):
                view.state = "replaced"
            _bind(view, ni.instance)
        case InstanceDestroyed(instance_id=iid):
            node = state.node_of.get(iid)
            if node is not None:
                view = state.node(node)
                if view.instance_id == iid:
                    view.state, view.phase, view.task = "destroyed", "", ""
                    if view.ended_at is None:
                        view.ended_at = now
        case ShutdownRequested(cluster_id=cid):
            if cid == cluster.id:
                _advance(cluster, "shutting down")
        case ClusterDestroyed(cluster_id=cid):
            if cid == cluster.id or not cluster.id:
                cluster.state = "destroyed"
                cluster.ended_at = now
                for view in state.nodes.values():
                    if view.ended_at is None and view.started_at is not None:
                        view.ended_at = now
        case Error(message=message, fatal=fatal):
            state.errors.append(ErrorView(message, fatal, now))
            del state.errors[:-MAX_ERRORS]
    return state


def replay(events: Iterable[tuple[float, Any]], state: PanelState | None = None) -> PanelState:
    """Fold ``(time, event)`` pairs into a state (a new one unless given)."""
    state = state if state is not None else PanelState()
    for now, event in events:
        apply(state, event, now)
    return state
