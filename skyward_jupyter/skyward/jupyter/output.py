"""What a cell shows while it runs: per-node streamed output, and ``up``'s progress.

Output printed from a background task lands in whichever cell ran last, so everything
here goes to display handles created by (and bound to) the cell that runs. Updates are
coalesced: at most ``RATE`` a second whatever the rate of events, and a final update when
the cell ends.
"""

from __future__ import annotations

import contextvars
import sys
import time
from collections.abc import Callable
from itertools import groupby
from operator import itemgetter
from typing import Any

from IPython.core.interactiveshell import InteractiveShell
from IPython.display import DisplayHandle, display

from ..core.bus import EventBus
from ..core.outputs import Clear, Display, LogLines, Result
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
from .throttle import Throttle

__all__ = ["CellOutput", "UpProgress"]

RATE = 10.0  # flushes a second, at most
MESSAGES = 20.0  # display updates a second to the frontend, at most, all nodes together
RED, RESET = "\x1b[31m", "\x1b[0m"


def _throttle(flush: Callable[[], int | None]) -> Throttle:
    """A throttle whose flushes run in the context of the cell that runs now (so its
    displays go to that cell), at most ``RATE`` a second and ``MESSAGES`` messages a
    second (``flush`` returns how many it sent: one per node updated)."""
    return Throttle(flush, RATE, MESSAGES, contextvars.copy_context())


class _Live:
    """Unfinished lines (progress bars) of several nodes, redrawn in place in one display.

    With several nodes in one output area, a carriage return cannot redraw one node's
    bar (another node may have written since), so each node's unfinished line is shown
    here, and goes to the stream once it ends.
    """

    def __init__(self, context: contextvars.Context) -> None:
        self._context = context
        self._lines: dict[tuple[int, str], str] = {}
        self._handle: DisplayHandle | None = None
        self._shown = ""
        self._throttle = _throttle(self._flush)

    def set(self, node: int, stream: str, text: str | None) -> None:
        key = (node, stream)
        if text is None:
            if self._lines.pop(key, None) is None:
                return
        else:
            self._lines[key] = text
        self._throttle.poke()

    def _render(self) -> str:
        return "\n".join(
            f"[node {node}] {RED}{text}{RESET}" if stream == "stderr" else f"[node {node}] {text}"
            for (node, stream), text in sorted(self._lines.items())
        )

    def _flush(self) -> int:
        text = self._render()
        if text == self._shown:
            return 0
        self._shown = text
        bundle = {"text/plain": text}
        if self._handle is None:
            self._handle = display(bundle, raw=True, display_id=True)
        else:
            self._handle.update(bundle, raw=True)
        return 1

    def close(self) -> None:
        self._throttle.cancel()
        self._lines.clear()
        if self._handle is not None:
            self._context.run(self._flush)


class CellOutput:
    """What one ``%%skyward run`` cell shows, as a local cell would show it.

    Printed text reaches the frontend as ``stream`` messages (``[node N]`` before each
    line when the cluster has several nodes), rich outputs as ``display_data``, and with
    one unprefixed node the cell's value as an ``execute_result``: message type by
    message type what the same cell shows locally. With several nodes a value shows as
    ``Out[node:count]`` (as ``%%px`` does) and unfinished lines in one live display.
    ``grouped`` holds everything until the cell ends, then shows it node by node.
    Everything is sent in the context of the cell that made this view (ipykernel keeps
    the cell's parent message in a context variable).
    """

    def __init__(
        self,
        bus: EventBus,
        tasks: dict[str, int],
        prefixed: bool,
        grouped: bool = False,
    ) -> None:
        self._tasks = tasks
        self._prefixed = prefixed
        self._grouped = grouped
        self._context = contextvars.copy_context()
        self._live = _Live(self._context) if prefixed and not grouped else None
        self._held: dict[int, list[tuple[str, Any]]] = {node: [] for node in tasks.values()}
        self.dropped: dict[int, int] = {}
        self._unsubscribe = [
            bus.subscribe(LogLines, self._on_lines),
            bus.subscribe(Display, self._on_display),
            bus.subscribe(Result, self._on_result),
            bus.subscribe(Clear, self._on_clear),
        ]

    def _on_lines(self, event: LogLines) -> None:
        node = self._tasks.get(event.task_id)  # type: ignore[arg-type]
        if node is None or event.panel_only:
            return
        prefix = f"[node {node}] " if self._prefixed and not self._grouped else ""
        lines = event.lines
        live = self._live
        if not event.partial and (live is not None or not any(o for _, _, o in lines)):
            # The flood's case: whole lines, no carriage returns. Each run of one stream
            # becomes one text, joined at C speed (a line costs no Python step here).
            joiner = "\n" + prefix
            for stream, run in groupby(lines, key=itemgetter(0)):
                if live is not None:
                    live.set(node, stream, None)
                text = prefix + joiner.join([line[1] for line in run]) + "\n"
                self._emit(node, "stream", (stream, text))
            return
        last = {stream: i for i, (stream, _, _) in enumerate(lines)}
        partial = {last[s] for s in event.partial if s in last}
        runs: list[tuple[str, list[str]]] = []
        for i, (stream, text, overwrite) in enumerate(lines):
            if live is not None:
                if i in partial:
                    live.set(node, stream, text)
                    continue
                live.set(node, stream, None)
                piece = f"{prefix}{text}\n"
            else:
                piece = ("\r" if overwrite else "") + prefix + text
                if i not in partial:
                    piece += "\n"
            if runs and runs[-1][0] == stream:
                runs[-1][1].append(piece)
            else:
                runs.append((stream, [piece]))
        for stream, pieces in runs:
            self._emit(node, "stream", (stream, "".join(pieces)))

    def _on_display(self, event: Display) -> None:
        node = self._tasks.get(event.task_id)  # type: ignore[arg-type]
        if node is None:
            return
        transient = dict(event.transient)
        if self._prefixed and "display_id" in transient:
            transient["display_id"] = f"{transient['display_id']}-node{node}"
        data = self._tagged(node, event.data, "")
        self._emit(
            node, "display", (data, self._metadata(node, event.metadata), transient, event.update)
        )

    def _on_result(self, event: Result) -> None:
        node = self._tasks.get(event.task_id)
        if node is None:
            return
        if self._prefixed:
            data = self._tagged(node, event.data, f"Out[{node}:{event.count}]: ")
            self._emit(node, "display", (data, self._metadata(node, event.metadata), {}, False))
        else:
            self._emit(node, "result", (event.data, self._metadata(node, event.metadata)))

    def _on_clear(self, event: Clear) -> None:
        node = self._tasks.get(event.task_id)  # type: ignore[arg-type]
        if node is not None:
            self._emit(node, "clear", event.wait)

    def _tagged(self, node: int, data: dict[str, Any], label: str) -> dict[str, Any]:
        if not (self._prefixed or label) or "text/plain" not in data:
            return data
        prefix = label or f"[node {node}] "
        return {**data, "text/plain": prefix + str(data["text/plain"])}

    @staticmethod
    def _metadata(node: int, metadata: dict[str, Any]) -> dict[str, Any]:
        return {**metadata, "skyward": {"node": node}}

    def _emit(self, node: int, kind: str, payload: Any) -> None:
        if self._grouped:
            self._held[node].append((kind, payload))
        else:
            self._context.run(_send, kind, payload)

    def note(self, node: int, text: str) -> None:
        """A line of ours about ``node`` (a cut output, a killed process), on stderr."""
        prefix = f"[node {node}] " if self._prefixed else ""
        self._emit(node, "stream", ("stderr", f"{prefix}{text}\n"))

    def close(self) -> None:
        """Stop listening; show what was held (``grouped``) node by node."""
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        if self._live is not None:
            self._live.close()
        if not self._grouped:
            return
        many = len(self._held) > 1
        for node, parts in self._held.items():
            if many and parts:
                self._context.run(_send, "stream", ("stdout", f"── node {node} ──\n"))
            for kind, payload in parts:
                self._context.run(_send, kind, payload)


def _send(kind: str, payload: Any) -> None:
    """One output of the cell, through the kernel's own machinery (so the frontend gets
    exactly the messages a local cell sends)."""
    if kind == "stream":
        stream, text = payload
        # ipykernel buffers each stream apart, as it does a local cell's
        (sys.stderr if stream == "stderr" else sys.stdout).write(text)
        return
    shell = InteractiveShell.instance() if InteractiveShell.initialized() else None
    if kind == "display":
        data, metadata, transient, update = payload
        if shell is None:
            print(data.get("text/plain", ""))
            return
        shell.display_pub.publish(data=data, metadata=metadata, transient=transient, update=update)
    elif kind == "result":
        data, metadata = payload
        if shell is None:
            print(data.get("text/plain", ""))
            return
        hook = shell.displayhook
        hook.start_displayhook()
        hook.write_output_prompt()
        hook.write_format_data(data, metadata)
        hook.finish_displayhook()
    elif kind == "clear" and shell is not None:
        shell.display_pub.clear_output(payload)


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
        self._throttle = _throttle(self._flush)
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
