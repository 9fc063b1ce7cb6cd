"""The panel's state as a pure fold of the event stream.

``apply(state, event, now)`` folds one event into a :class:`PanelState`; ``replay(events)``
folds a whole recorded log. No I/O, no widgets, no clock of its own (``now`` is given), so
a recorded event log replays into exactly the state the live panel had.

Log lines are kept per node in a bounded :class:`LogRing` (``rings.py``). A node being
replaced (``InstancePreempted``, then ``InstanceRequested(replacing=old)``) shows as
``replacing``, its new instance's progress as the phase, until that instance is
bootstrapped.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ... import events as ev
from ...core.outputs import LogLines, WorkerCrashed
from ...model import Instance
from .rings import LOG_LINES, METRIC_POINTS, LogRing, MetricSeries

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

MAX_ERRORS = 20

CLUSTER_STATES = (
    "requested",
    "provisioning",
    "bootstrapping",
    "ready",
    "shutting down",
    "destroyed",
)


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
    replacing: str = ""
    """The lost instance this node's new one replaces, until the new one is bootstrapped."""
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
    replacements: dict[str, int] = field(default_factory=dict)
    """The node of each replacement's request id (its ``Error`` fails the node)."""
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


def _own(state: PanelState, ni: ev.NodeInstance) -> NodeView | None:
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


def _step(view: NodeView, state: str, phase: str = "") -> None:
    """Move a node's row on; a node being replaced stays ``replacing``, with its new
    instance's progress as the phase."""
    if view.replacing:
        view.phase = phase or state
    else:
        view.state, view.phase = state, phase


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
    if kind is ev.Log:
        view = _own(state, event.instance)
        if view is not None:
            view.log.add(event.stream, event.line, event.overwrite)
        return state
    cluster = state.cluster
    match event:
        case ev.ClusterRequested(request_id=rid, provider=provider, spec=spec):
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
        case ev.ClusterProvisioned(cluster_id=cid):
            cluster.id = cid
            _advance(cluster, "provisioning")
        case ev.InstanceRequested(request_id=rid, node_id=node, cluster_id=cid, replacing=old):
            if not cluster.id:
                cluster.id = cid
            view = state.node(node)
            if old is not None:
                state.replacements[rid] = node
                view.replacing = old
                view.state, view.phase, view.task = "replacing", "requested", ""
                view.note = f"replacing {old}"
            elif not view.instance_id:
                view.state = "requested"
        case ev.InstanceLaunched(node_id=node, instance_id=iid):
            view = state.node(node)
            if view.instance_id and view.instance_id != iid:
                view.replaced.append(view.instance_id)
            state.node_of[iid] = node
            view.instance_id = iid
            _step(view, "launched")
            view.started_at, view.ended_at = now, None
        case ev.InstanceRunning(node_id=node, instance=inst):
            view = state.node(node)
            if view.instance_id in ("", inst.id):
                view.instance_id = inst.id
                state.node_of[inst.id] = node
                _step(view, "running")
                _bind(view, inst)
        case ev.InstanceProvisioned(instance=ni):
            view = _own(state, ni)
            if view is not None:
                _step(view, "provisioned")
                _bind(view, ni.instance)
        case ev.BootstrapRequested(instance=ni):
            _advance(cluster, "bootstrapping")
            view = _own(state, ni)
            if view is not None:
                _step(view, "bootstrapping")
        case ev.BootstrapPhase(instance=ni, event=kind, phase=phase, error=error):
            view = _own(state, ni)
            if view is not None:
                if kind == "started":
                    _step(view, "bootstrapping", phase)
                elif kind == "failed":
                    view.state, view.phase, view.replacing = "failed", phase, ""
                    view.note = error or ""
        case ev.BootstrapCommand(instance=ni, command=command):
            view = _own(state, ni)
            if view is not None:
                view.log.add("cmd", "$ " + command)
        case ev.ConsoleOutput(instance=ni, content=text, stream=stream, overwrite=overwrite):
            view = _own(state, ni)
            if view is not None:
                view.log.add("console-" + stream, text, overwrite)
        case ev.BootstrapFailed(instance=ni, phase=phase, error=error):
            view = _own(state, ni)
            if view is not None:
                view.state, view.phase, view.replacing = "failed", phase, ""
                view.note = error.partition("\n")[0]
        case ev.InstanceBootstrapped(instance=ni):
            view = _own(state, ni)
            if view is not None:
                if view.replacing:
                    view.note, view.replacing = f"replaced {view.replacing}", ""
                view.state, view.phase = "ready", ""
                _bind(view, ni.instance)
        case ev.ClusterReady(cluster=ready):
            cluster.id = ready.id
            cluster.ready_at = now
            _advance(cluster, "ready")
        case ev.TaskStarted(task_id=task, instance=ni, function_name=name):
            view = _own(state, ni)
            state.task_names[task] = name
            if view is not None:
                view.state, view.task = "busy", task
                view.log.add("meta", f"▶ {name} {task}")
        case ev.TaskCompleted(task_id=task, instance=ni, duration=took, success=ok, error=err):
            view = _own(state, ni)
            if view is not None:
                if view.state == "busy" and view.task == task:
                    view.state, view.task = "ready", ""
                outcome = "done" if ok else f"failed: {err}"
                view.log.add("meta", f"■ {task} {outcome} in {took:.1f} s")
        case ev.Metric(instance=ni, name=name, value=value, timestamp=stamp):
            view = _own(state, ni)
            if view is not None:
                series = view.metrics.get(name)
                if series is None:
                    series = view.metrics[name] = MetricSeries()
                series.add(stamp, value)
        case ev.InstancePreempted(instance=ni, reason=reason):
            view = _own(state, ni)
            if view is not None:
                view.state, view.note = "preempted", reason
                view.ended_at = now
        case ev.InstanceReplaced(old_id=old, new=ni):
            view = state.node(ni.node)
            state.node_of[ni.instance.id] = ni.node
            if old not in view.replaced:
                view.replaced.append(old)
            view.instance_id = ni.instance.id
            if view.state in ("ready", "busy"):
                view.note = f"replaced {old}"
            else:  # not bootstrapped yet
                view.state, view.replacing, view.note = "replacing", old, f"replacing {old}"
            _bind(view, ni.instance)
        case ev.InstanceDestroyed(instance_id=iid):
            node = state.node_of.get(iid)
            if node is not None:
                view = state.node(node)
                if view.instance_id == iid and view.replacing != iid:
                    view.state, view.phase, view.task = "destroyed", "", ""
                    if view.ended_at is None:
                        view.ended_at = now
        case ev.ShutdownRequested(cluster_id=cid):
            if cid == cluster.id:
                _advance(cluster, "shutting down")
        case ev.ClusterDestroyed(cluster_id=cid):
            if cid == cluster.id or not cluster.id:
                cluster.state = "destroyed"
                cluster.ended_at = now
                for view in state.nodes.values():
                    if view.ended_at is None and view.started_at is not None:
                        view.ended_at = now
        case ev.Error(request_id=rid, message=message, fatal=fatal):
            state.errors.append(ErrorView(message, fatal, now))
            del state.errors[:-MAX_ERRORS]
            node = state.replacements.pop(rid, None)
            if node is not None and state.node(node).replacing:  # the replacement failed
                view = state.node(node)
                view.state, view.phase, view.replacing = "failed", "", ""
                view.note = message
    return state


def replay(events: Iterable[tuple[float, Any]], state: PanelState | None = None) -> PanelState:
    """Fold ``(time, event)`` pairs into a state (a new one unless given)."""
    state = state if state is not None else PanelState()
    for now, event in events:
        apply(state, event, now)
    return state
