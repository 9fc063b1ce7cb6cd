"""What a cell shows while it runs: per-node streamed output, and ``up``'s progress.

Output printed from a background task lands in whichever cell ran last, so everything
here goes to display handles created by (and bound to) the cell that runs. Updates are
coalesced: at most ``RATE`` a second whatever the rate of events, and a final update when
the cell ends.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Callable
from typing import Any

from IPython.display import DisplayHandle, display

from ..core.bus import EventBus
from ..core.outputs import Display, LogLines
from ..events import (
    BootstrapFailed,
    BootstrapPhase,
    ClusterProvisioned,
    ClusterReady,
    Error,
    InstanceBootstrapped,
    InstanceLaunched,
    InstanceProvisioned,
    InstanceRunning,
    NodeInstance,
)

__all__ = ["CellOutput", "UpProgress"]

RATE = 10.0  # flushes a second, at most
MESSAGES = 20.0  # display updates a second to the frontend, at most, all nodes together
LIVE_LINES = 200
RED, RESET = "\x1b[31m", "\x1b[0m"


class _Throttle:
    """Calls ``flush`` while something is dirty, at most ``RATE`` times a second and so
    that the messages it sends stay under ``MESSAGES`` a second (``flush`` returns how
    many it sent: one per node updated).

    ``flush`` runs in the context of the cell that made the throttle: ipykernel keeps the
    parent message in a context variable, and that is what sends a display to its cell.
    """

    def __init__(self, flush: Callable[[], int | None]) -> None:
        self._flush = flush
        self._context = contextvars.copy_context()
        self._handle: asyncio.TimerHandle | None = None
        self._next = 0.0

    def poke(self) -> None:
        if self._handle is not None:
            return
        loop = asyncio.get_running_loop()
        delay = max(0.0, self._next - loop.time())
        self._handle = loop.call_later(delay, self._fire, context=self._context)

    def _fire(self) -> None:
        self._handle = None
        now = asyncio.get_running_loop().time()
        sent = self._flush() or 1
        self._next = now + max(1.0 / RATE, sent / MESSAGES)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


class _NodeText:
    """One node's output lines, with overwrite applied per stream."""

    __slots__ = ("handle", "last", "lines", "result", "dirty")

    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []
        self.last: dict[str, int] = {}
        self.handle: DisplayHandle | None = None
        self.result: str | None = None
        self.dirty = False

    def add(self, stream: str, line: str, overwrite: bool) -> None:
        index = self.last.get(stream) if overwrite else None
        if index is not None:
            self.lines[index] = (stream, line)
        else:
            self.last[stream] = len(self.lines)
            self.lines.append((stream, line))
        self.dirty = True

    def render(self, prefix: str, limit: int | None) -> str:
        lines = self.lines if limit is None else self.lines[-limit:]
        out = []
        if limit is not None and len(self.lines) > limit:
            hidden = len(self.lines) - limit
            out.append(f"{prefix}… {hidden:,} earlier lines (all shown when the cell ends)")
        for stream, line in lines:
            out.append(f"{prefix}{RED}{line}{RESET}" if stream == "stderr" else prefix + line)
        if self.result is not None:
            out.append(prefix + self.result)
        return "\n".join(out)


class CellOutput:
    """The streamed output of one ``%%skyward run`` cell, one block per node.

    A node's output is a sequence of parts: runs of text lines (each one display, updated
    in place while the cell runs) and rich displays (images, HTML) between them, in the
    order the node produced them. With ``grouped``, nothing shows until the cell ends;
    then each node's parts show together, node by node.
    """

    def __init__(
        self, bus: EventBus, nodes: list[NodeInstance], prefixed: bool, grouped: bool = False
    ) -> None:
        self._by_instance = {n.instance.id: n.node for n in nodes}
        self._parts: dict[int, list[_NodeText | tuple[dict, dict]]] = {n.node: [] for n in nodes}
        self._prefixed = prefixed
        self._grouped = grouped
        self._throttle = _Throttle(self._flush)
        self._context = contextvars.copy_context()  # the cell's, for displays from events
        self._unsubscribe = [
            bus.subscribe(LogLines, self._on_lines),
            bus.subscribe(Display, self._on_display),
        ]

    def _prefix(self, node: int) -> str:
        return f"[node {node}] " if self._prefixed else ""

    def _node_of(self, instance: NodeInstance) -> int | None:
        return self._by_instance.get(instance.instance.id)

    def _text(self, node: int) -> _NodeText:
        parts = self._parts[node]
        if not parts or not isinstance(parts[-1], _NodeText):
            parts.append(_NodeText())
        return parts[-1]  # type: ignore[return-value]

    def _on_lines(self, event: LogLines) -> None:
        node = self._node_of(event.instance)
        if node is None:
            return
        add = self._text(node).add
        for stream, line, overwrite in event.lines:
            add(stream, line, overwrite)
        if not self._grouped:
            self._throttle.poke()

    def _on_display(self, event: Display) -> None:
        node = self._node_of(event.instance)
        if node is None:
            return
        # Events arrive in the agent reader's context; a display must carry this cell's.
        self._context.run(self._show_rich, node, event.data, event.metadata)

    def _show_rich(self, node: int, data: dict, metadata: dict) -> None:
        parts = self._parts[node]
        if not self._grouped:
            if parts and isinstance(parts[-1], _NodeText) and parts[-1].dirty:
                self._show(node, parts[-1], None)  # the lines printed before it go first
            _display_rich(data, metadata, node, self._prefix(node))
        parts.append((data, metadata))

    def set_result(self, node: int, text: str, data: dict | None = None) -> None:
        """The cell's last expression on ``node``: a line, or a rich display."""
        if data and len(data) > 1:
            self._show_rich(node, data, {})
            return
        block = self._text(node)
        block.result = text
        block.dirty = True

    def _show(self, node: int, text: _NodeText, limit: int | None) -> None:
        bundle = {"text/plain": text.render(self._prefix(node), limit)}
        if text.handle is None:
            text.handle = display(bundle, raw=True, display_id=True)
        else:
            text.handle.update(bundle, raw=True)
        text.dirty = False

    def _flush(self) -> int:
        sent = 0
        for node, parts in self._parts.items():
            if parts and isinstance(parts[-1], _NodeText) and parts[-1].dirty:
                self._show(node, parts[-1], LIVE_LINES)
                sent += 1
        return sent

    def close(self) -> None:
        """Stop listening and show every node's whole output."""
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._throttle.cancel()
        for node, parts in self._parts.items():
            if self._grouped and parts and len(self._parts) > 1:
                display({"text/plain": f"── node {node} ──"}, raw=True)
            for part in parts:
                if isinstance(part, _NodeText):
                    if self._grouped:
                        display({"text/plain": part.render("", None)}, raw=True)
                    elif part.dirty or (part.handle is not None and len(part.lines) > LIVE_LINES):
                        self._show(node, part, None)
                elif self._grouped:
                    _display_rich(part[0], part[1], node, "")


def _display_rich(data: dict, metadata: dict, node: int, prefix: str) -> None:
    bundle = dict(data)
    if prefix and "text/plain" in bundle:
        bundle["text/plain"] = prefix + str(bundle["text/plain"])
    meta = {**metadata, "skyward": {"node": node}}
    display(bundle, raw=True, metadata=meta)


class _NodeProgress:
    __slots__ = ("address", "instance_id", "phase", "state")

    def __init__(self) -> None:
        self.state = "requested"
        self.instance_id = ""
        self.address = ""
        self.phase = ""


class UpProgress:
    """Live per-node phases while ``%skyward up`` runs; a one-line summary at the end."""

    def __init__(self, bus: EventBus, provider: str, nodes: int) -> None:
        self._provider = provider
        self._nodes = {n: _NodeProgress() for n in range(nodes)}
        self._node_of: dict[str, int] = {}
        self._cluster = ""
        self._start = time.monotonic()
        self._handle: DisplayHandle | None = display(
            {"text/plain": self._render()}, raw=True, display_id=True
        )
        self._throttle = _Throttle(self._flush)
        self._context = contextvars.copy_context()
        self._final = ""
        self._unsubscribe = bus.subscribe_all(self._on_event)

    def _on_event(self, event: Any) -> None:
        match event:
            case ClusterProvisioned(cluster_id=cluster_id):
                self._cluster = cluster_id
            case InstanceLaunched(node_id=node, instance_id=iid) if node in self._nodes:
                self._node_of[iid] = node
                self._nodes[node].state = "launched"
                self._nodes[node].instance_id = iid
            case InstanceRunning(node_id=node, instance=instance) if node in self._nodes:
                self._nodes[node].state = "running"
                self._nodes[node].address = f"{instance.ip}:{instance.ssh_port}"
            case InstanceProvisioned(instance=ni):
                self._set(ni, "provisioned")
            case BootstrapPhase(instance=ni, event="started", phase=phase):
                self._set(ni, "bootstrapping", phase)
            case BootstrapPhase(instance=ni, event="failed", phase=phase):
                self._set(ni, "failed", phase)
            case BootstrapFailed(instance=ni, phase=phase):
                self._set(ni, "failed", phase)
            case InstanceBootstrapped(instance=ni):
                self._set(ni, "ready")
            case Error():
                pass
            case _:
                return
        self._throttle.poke()

    def _set(self, ni: NodeInstance, state: str, phase: str = "") -> None:
        progress = self._nodes.get(ni.node)
        if progress is not None and self._node_of.get(ni.instance.id) == ni.node:
            progress.state = state
            progress.phase = phase

    def _render(self) -> str:
        elapsed = time.monotonic() - self._start
        head = f"skyward up · {self._provider} · {len(self._nodes)} node(s)"
        if self._cluster:
            head += f" · {self._cluster}"
        lines = [f"{head} · {elapsed:.1f} s"]
        for node, p in self._nodes.items():
            state = f"{p.state}: {p.phase}" if p.phase and p.state != "ready" else p.state
            lines.append(f"  node {node}  {p.instance_id:<28} {p.address:<21} {state}")
        return "\n".join(lines)

    def _flush(self) -> None:
        if self._handle is not None:
            self._handle.update({"text/plain": self._render()}, raw=True)

    def finish(self, summary: str | None) -> None:
        """Stop listening; replace the progress with ``summary`` (or the last state)."""
        self._unsubscribe()
        self._throttle.cancel()
        if self._handle is not None:
            text = summary if summary is not None else self._render()
            self._final = text
            self._handle.update({"text/plain": text}, raw=True)

    def notice(self, message: str) -> None:
        """Add a line under the summary (an automatic shutdown, a cost warning), in the
        ``up`` cell, whichever cell runs now."""
        self._final = f"{self._final}\n{message}" if self._final else message
        if self._handle is not None:
            handle, text = self._handle, self._final
            self._context.run(handle.update, {"text/plain": text}, raw=True)

    def summary(self, ready: ClusterReady) -> str:
        """The one line shown once the cluster is ready."""
        cluster = ready.cluster
        elapsed = time.monotonic() - self._start
        kinds = {n.instance.offer.instance_type for n in cluster.nodes if n.instance.offer}
        addresses = ", ".join(f"{n.instance.ip}:{n.instance.ssh_port}" for n in cluster.nodes)
        kind = f" ({', '.join(sorted(kinds))})" if kinds else ""
        return (
            f"✓ cluster {cluster.id} ready: {len(cluster.nodes)} node(s) on "
            f"{cluster.provider}{kind} in {elapsed:.1f} s · {addresses}"
        )
