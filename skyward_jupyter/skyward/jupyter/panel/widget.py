"""The live panel: one :class:`Panel` per kernel, one widget model, any number of views.

The panel subscribes once to the bus, folds every event into its :class:`PanelState`
(``state.py``) and syncs the browser at most ``RATE`` times a second (``sync.py``): the
cluster and node rows as a synced trait, log rows and metric points as custom messages.
Log rows go only for the panes open in a browser (each page's store says which, as
"panes"), and all of a node's rows when its pane opens. A view that mounts late asks
for a snapshot. Button presses from the browser may arrive
on a comm-subshell thread while a cell runs; they are handed to the kernel's loop with
``call_soon_threadsafe`` and nothing else is done on that thread.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import threading
import time
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypedDict

import anywidget
import traitlets

from ...core.bus import EventBus
from ...core.outputs import LogLines
from ...events import Error, Event, Log
from ..throttle import Throttle
from .state import PanelState, apply
from .sync import RATE, delta, snapshot, summary

__all__ = ["Panel", "PanelWidget"]

# Every fact the panel folds: lines come in batches (LogLines), not one Log event each.
FOLDED = (*(kind for kind in typing.get_args(Event) if kind is not Log), LogLines)

log = logging.getLogger("skyward")

STATIC = Path(__file__).resolve().parents[2] / "static"
_MISSING_ESM = """
export default { render({ el }) {
  el.textContent = "skyward panel: its JavaScript bundle is missing; build it with " +
    "`scripts/setup` (or `npm ci && npm run build` in js/) and restart the kernel.";
} };
"""


def _asset(name: str, fallback: str) -> Path | str:
    path = STATIC / name
    return path if path.is_file() else fallback


class PanelWidget(anywidget.AnyWidget):
    """The widget model every view of the panel renders."""

    _esm = _asset("panel.js", _MISSING_ESM)
    _css = _asset("panel.css", "")
    panel_id = traitlets.Unicode("").tag(sync=True)
    """Unique per model: the views of one model share one store in the page."""
    summary = traitlets.Dict().tag(sync=True)
    subshells = traitlets.Bool(None, allow_none=True).tag(sync=True)
    """Whether the browser's messages reach the kernel while a cell runs (None: unknown)."""

    def __repr__(self) -> str:
        c = self.summary.get("cluster", {})
        if not c.get("id") and not c.get("state"):
            return "skyward live panel (a widget: shown in JupyterLab)"
        nodes = self.summary.get("nodes", [])
        states = ", ".join(f"node {n['node']} {n['state']}" for n in nodes)
        return f"skyward panel · {c.get('id') or '…'} · {c.get('state')} · {states}"


class FromBrowser(TypedDict, total=False):
    """A message a view sends: ``kind`` is hello, snapshot, panes, shutdown or interrupt;
    "panes" names the ``nodes`` whose log pane is open in the page's store ``client``."""

    kind: str
    lab: bool
    client: str
    nodes: list[int]


class Panel:
    """This kernel's live panel."""

    def __init__(
        self,
        bus: EventBus,
        loop: asyncio.AbstractEventLoop,
        actions: dict[str, Callable[[], Any]] | None = None,
        clock: Callable[[], float] = time.time,
        rate: float = RATE,
    ) -> None:
        self.bus = bus
        self.state = PanelState()
        self.widget = PanelWidget(panel_id=secrets.token_hex(8))
        self.actions = dict(actions or {})
        self.frontend: dict[str, Any] = {}
        self.stats = {"syncs": 0, "messages": 0, "bytes": 0, "snapshots": 0}
        self._loop = loop
        self._thread = threading.current_thread()
        self._clock = clock
        self._seq = 0
        self._panes: dict[str, set[int]] = {}  # the open panes of each page's store
        self._whole: set[int] = set()  # panes just opened: all their rows are due
        self._last_summary: dict[str, Any] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._sidecars: list[Any] = []
        self._throttle = Throttle(self._flush, rate)
        self.widget.on_msg(self._on_msg)
        self._unsubscribe = bus.subscribe(FOLDED, self._on_event)
        self._flush()

    # -- events in ----------------------------------------------------------------------

    def _on_event(self, event: Any) -> None:
        apply(self.state, event, self._clock())
        self._throttle.poke(self._loop)

    # -- state out ----------------------------------------------------------------------

    def _flush(self) -> None:
        now = self._clock()
        self.stats["syncs"] += 1
        current = summary(self.state, now)
        current.pop("now")
        if current != self._last_summary:
            self._last_summary = current
            self.widget.summary = {**current, "now": now}
            self.stats["bytes"] += len(json.dumps(current))
            self._unroute()
        shown = self.shown
        message, buffer = delta(self.state, self._seq + 1, shown, self._whole)
        self._whole = set()
        if message["logs"] or buffer is not None:
            self._seq += 1
            self._send(message, buffer)
        nodes = self.state.nodes
        if any(nodes[n].log.pending for n in shown if n in nodes):
            self._throttle.poke(self._loop)  # rows a flood skipped: send them next

    @property
    def shown(self) -> set[int]:
        """The nodes whose log pane is open in some browser."""
        return set().union(*self._panes.values())

    def _show(self, client: str, nodes: Any) -> None:
        """A page's store says which panes are open; a pane just opened gets all its rows."""
        mine = {n for n in nodes if isinstance(n, int)} if isinstance(nodes, list) else set()
        self._whole |= mine - self._panes.get(client, set())
        if mine:
            self._panes[client] = mine
        else:
            self._panes.pop(client, None)
        self._throttle.poke(self._loop)

    def _send(self, message: Any, buffer: bytes | None) -> None:
        self.stats["messages"] += 1
        self.stats["bytes"] += len(json.dumps(message)) + (len(buffer) if buffer else 0)
        self.widget.send(message, [buffer] if buffer is not None else None)
        self._unroute()

    def _unroute(self) -> None:
        """Let the browser's messages reach the comm subshell the browser chose.

        ipykernel 7.4 routes a comm's incoming messages to the subshell of the request
        that last published on it; the panel publishes from the cell that runs, so its
        buttons would wait for that cell to end. Forgetting that route (a private
        attribute, hence the care) leaves the frontend's own subshell in charge.
        """
        comm = getattr(self.widget, "comm", None)
        lock = getattr(comm, "_reply_subshell_lock", None)
        if lock is None or not hasattr(comm, "_reply_subshell_id"):
            return
        with lock:
            try:
                del comm._reply_subshell_id
            except AttributeError:
                pass

    def _send_snapshot(self) -> None:
        self._throttle.flush_now(self._loop)
        message, buffer = snapshot(self.state, self._seq, self.shown)
        self.stats["snapshots"] += 1
        self._send(message, buffer)

    # -- messages from the browser ------------------------------------------------------

    def _on_msg(self, _widget: Any, content: Any, _buffers: Any) -> None:
        # On a comm subshell this runs on another thread: hand everything to the loop.
        via_subshell = threading.current_thread() is not self._thread
        try:
            self._loop.call_soon_threadsafe(self._handle, content, via_subshell)
        except RuntimeError:  # the loop is closed: the kernel is going away
            pass

    def _handle(self, content: FromBrowser, via_subshell: bool) -> None:
        kind = content.get("kind") if isinstance(content, dict) else None
        # A view's first message may leave before its comm subshell is started: any
        # message through a subshell proves they work.
        if via_subshell or self.widget.subshells is None:
            self.widget.subshells = via_subshell
            self._unroute()
        if kind == "hello":
            self.frontend.update({k: v for k, v in content.items() if k != "kind"})
            self._send_snapshot()
        elif kind == "snapshot":
            self._send_snapshot()
        elif kind == "panes":
            self._show(str(content.get("client", "")), content.get("nodes"))
        elif kind in self.actions:
            try:
                result = self.actions[kind]()
            except Exception as exc:
                self.bus.publish(Error("panel", f"{kind}: {exc}"))
                return
            if asyncio.iscoroutine(result):
                self.spawn(result, kind)

    def spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        """Run ``coro`` as a task the panel owns; a failure becomes an ``Error`` event."""
        task = self._loop.create_task(coro, name=f"skyward-panel:{name}")
        self._tasks.add(task)

        def done(task: asyncio.Task[Any]) -> None:
            self._tasks.discard(task)
            if not task.cancelled() and task.exception() is not None:
                self.bus.publish(Error("panel", f"{name}: {task.exception()}", fatal=False))

        task.add_done_callback(done)
        return task

    # -- showing ------------------------------------------------------------------------

    def show(self, sidebar: bool = False) -> None:
        """Display a view of the panel here (or in JupyterLab's right sidebar)."""
        from IPython.display import display

        if sidebar:
            lab = self.frontend.get("lab")
            if lab is None:
                lab = bool(os.environ.get("JPY_SESSION_NAME"))
            try:
                from sidecar import Sidecar
            except ImportError:
                Sidecar = None
            if lab and Sidecar is not None:
                sidecar = Sidecar(title="skyward")
                with sidecar:
                    display(self.widget)
                self._sidecars.append(sidecar)
                return
            reason = "the `sidecar` package" if lab else "JupyterLab (with the `sidecar` package)"
            print(f"the sidebar needs {reason}: showing the panel here")
        display(self.widget)

    def close(self) -> None:
        """Stop listening to the bus, close the widget and any sidebar it was shown in."""
        self._unsubscribe()
        self._throttle.cancel()
        for task in list(self._tasks):
            task.cancel()
        for sidecar in self._sidecars:
            try:
                sidecar.close()
            except Exception:
                pass
        self._sidecars.clear()
        self.widget.close()
