"""Sync of the panel's state to the browser: what goes over the wire.

- The widget sends at most ``RATE`` syncs a second (``jupyter/throttle.py``).
- :func:`summary` is the small JSON of the cluster and node rows (a synced trait).
- :func:`delta` / :func:`snapshot` are custom messages: the log rows written since the
  last sync (or all of them), and the metric points as one binary buffer
  (:func:`encode_metrics`), decoded in ``js/src/metrics.ts``. Log rows go only for the
  nodes whose pane is open in a browser (``shown``): under a flood from many nodes, the
  rows of closed panes would be most of the traffic and of the page's work, for nothing
  it shows. A pane that opens gets every row of its node once (``whole``).

Binary metric format, version 1, little-endian::

    u8 version (1) | u16 series count | per series:
        u16 node | u8 name length | name (UTF-8) | u32 n | n × f64 time | n × f64 value
"""

from __future__ import annotations

import struct
import sys
from array import array
from collections.abc import Collection, Iterable
from typing import Any, TypedDict

from .state import PanelState

__all__ = [
    "RATE",
    "SYNC_ROWS",
    "decode_metrics",
    "delta",
    "encode_metrics",
    "snapshot",
    "summary",
]

RATE = 20.0
"""Most syncs a second."""
SYNC_ROWS = 100
"""Most log rows sent per node and sync, the newest first: a flood is shown as it comes,
and what it skipped (still in the ring) follows once it calms down."""
METRICS_VERSION = 1


# -- metrics ----------------------------------------------------------------------------

Series = tuple[int, str, array, array]


def encode_metrics(series: Iterable[Series]) -> bytes:
    """``(node, name, times, values)`` series → one binary buffer (format above)."""
    items = [s for s in series if len(s[2])]
    out = bytearray(struct.pack("<BH", METRICS_VERSION, len(items)))
    for node, name, times, values in items:
        raw = name.encode("utf-8")[:255]
        out += struct.pack("<HB", node, len(raw))
        out += raw
        out += struct.pack("<I", len(times))
        t = array("d", times)
        v = array("d", values)
        if sys.byteorder != "little":
            t.byteswap()
            v.byteswap()
        out += t.tobytes()
        out += v.tobytes()
    return bytes(out)


def decode_metrics(data: bytes) -> list[tuple[int, str, list[float], list[float]]]:
    """The inverse of :func:`encode_metrics` (for tests and tools)."""
    version, count = struct.unpack_from("<BH", data, 0)
    if version != METRICS_VERSION:
        raise ValueError(f"metrics buffer version {version}, expected {METRICS_VERSION}")
    offset = 3
    out = []
    for _ in range(count):
        node, length = struct.unpack_from("<HB", data, offset)
        offset += 3
        name = data[offset : offset + length].decode("utf-8")
        offset += length
        (n,) = struct.unpack_from("<I", data, offset)
        offset += 4
        times = list(struct.unpack_from(f"<{n}d", data, offset))
        offset += 8 * n
        values = list(struct.unpack_from(f"<{n}d", data, offset))
        offset += 8 * n
        out.append((node, name, times, values))
    return out


# -- messages ---------------------------------------------------------------------------


class LogRows(TypedDict):
    """Rows of one node: ``first`` is the oldest row number kept (older ones are gone);
    ``whole``: these are all the rows kept, which replace what the browser has."""

    first: int
    rows: list[tuple[int, str, str]]
    whole: bool


class DeltaMessage(TypedDict):
    """What changed since the previous sync (``kind`` is "delta"), or everything
    ("snapshot"); the metric points travel as the message's one binary buffer."""

    kind: str
    seq: int
    logs: dict[str, LogRows]
    metrics: bool


def summary(state: PanelState, now: float) -> dict[str, Any]:
    """The cluster and node rows, without logs and metric points (a synced trait).

    Uptime and cost are not in it: the browser computes them from the times and prices,
    with ``now`` to correct for its clock.
    """
    c = state.cluster
    return {
        "cluster": {
            "id": c.id,
            "name": c.name,
            "provider": c.provider,
            "state": c.state,
            "nodes": c.nodes,
            "requested_at": c.requested_at,
            "ready_at": c.ready_at,
            "ended_at": c.ended_at,
            "price_per_hour": state.price_per_hour(),
        },
        "nodes": [
            {
                "node": n.node,
                "instance_id": n.instance_id,
                "state": n.state,
                "phase": n.phase,
                "address": n.address,
                "spot": n.spot,
                "accelerator": n.accelerator,
                "instance_type": n.instance_type,
                "price_per_hour": n.price_per_hour,
                "started_at": n.started_at,
                "ended_at": n.ended_at,
                "task": n.task,
                "note": n.note,
                "metrics": sorted(n.metrics),
            }
            for n in sorted(state.nodes.values(), key=lambda n: n.node)
        ],
        "errors": [{"message": e.message, "fatal": e.fatal, "at": e.at} for e in state.errors],
        "now": now,
    }


def delta(
    state: PanelState, seq: int, shown: Collection[int] = (), whole: Collection[int] = ()
) -> tuple[DeltaMessage, bytes | None]:
    """The rows written since the last call of the ``shown`` nodes (at most ``SYNC_ROWS``
    a node; every row kept of the ``whole`` ones) and every node's new points, marked
    taken."""
    logs: dict[str, LogRows] = {}
    series: list[Series] = []
    for node, view in state.nodes.items():
        log = view.log
        if node in whole:
            log.forget_changes()
            logs[str(node)] = {"first": log.first, "rows": log.snapshot(), "whole": True}
        elif node in shown:
            rows = log.take_changes(SYNC_ROWS)
            if rows:
                logs[str(node)] = {"first": log.first, "rows": rows, "whole": False}
        for name, s in view.metrics.items():
            if s.fresh:
                t, v = s.take_fresh()
                series.append((node, name, t, v))
    buffer = encode_metrics(series) if series else None
    return {"kind": "delta", "seq": seq, "logs": logs, "metrics": buffer is not None}, buffer


def snapshot(
    state: PanelState, seq: int, shown: Collection[int] = ()
) -> tuple[DeltaMessage, bytes]:
    """Every point kept, and every row kept of the ``shown`` nodes (marked taken)."""
    logs: dict[str, LogRows] = {}
    series: list[Series] = []
    for node, view in state.nodes.items():
        if node in shown:
            view.log.forget_changes()
            logs[str(node)] = {"first": view.log.first, "rows": view.log.snapshot(), "whole": True}
        for name, s in view.metrics.items():
            t, v = s.points()
            series.append((node, name, t, v))
    return {"kind": "snapshot", "seq": seq, "logs": logs, "metrics": True}, encode_metrics(series)
