"""Recorded event logs: JSON lines of ``(time, event)``, to replay into the panel's state.

The first line is a header ``{"format": "skyward-events", "version": 1}``; each other
line is ``{"t": seconds, "e": {"type": "Log", ...fields}}`` where records inside events
(``NodeInstance``, ``Instance``, ``Offer``, ``ClusterSpec``, ``Cluster``) are encoded the
same way and tuples become lists. ``reply_to`` callables are not recorded.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from ... import events, model

__all__ = ["FORMAT", "VERSION", "Recorder", "decode", "encode", "load", "loads"]

FORMAT = "skyward-events"
VERSION = 1
_TYPES: dict[str, type] = {
    name: obj
    for module in (events, model)
    for name, obj in vars(module).items()
    if isinstance(obj, type) and dataclasses.is_dataclass(obj)
}
_TUPLES = {
    ("ClusterSpec", "pip"),
    ("ClusterSpec", "apt"),
    ("ClusterSpec", "env"),
    ("Cluster", "nodes"),
}


def encode(value: Any) -> Any:
    """An event (or record) as JSON-able data."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out: dict[str, Any] = {"type": type(value).__name__}
        for f in dataclasses.fields(value):
            item = getattr(value, f.name)
            if f.name == "reply_to" or callable(item):
                continue
            out[f.name] = encode(item)
        return out
    if isinstance(value, tuple | list):
        return [encode(v) for v in value]
    return value


def decode(data: Any, owner: str = "", field: str = "") -> Any:
    """The inverse of :func:`encode`."""
    if isinstance(data, dict) and "type" in data and data["type"] in _TYPES:
        kind = data["type"]
        fields = {k: decode(v, kind, k) for k, v in data.items() if k != "type"}
        return _TYPES[kind](**fields)
    if isinstance(data, list):
        items = [decode(v, owner, field) for v in data]
        if (owner, field) in _TUPLES:
            return tuple(tuple(i) if isinstance(i, list) else i for i in items)
        return items
    return data


def loads(lines: Iterable[str]) -> Iterator[tuple[float, Any]]:
    """``(time, event)`` pairs from the lines of a recorded log."""
    it = iter(lines)
    header = json.loads(next(it))
    if header.get("format") != FORMAT or header.get("version") != VERSION:
        raise ValueError(f"not a {FORMAT} v{VERSION} log: {header}")
    for line in it:
        if line.strip():
            record = json.loads(line)
            yield float(record["t"]), decode(record["e"])


def load(path: str | Path) -> list[tuple[float, Any]]:
    """Every ``(time, event)`` of the log at ``path``."""
    with open(path, encoding="utf-8") as fh:
        return list(loads(fh))


class Recorder:
    """A bus subscriber that writes each event as a line of ``out``."""

    def __init__(self, out: IO[str], clock: Callable[[], float]) -> None:
        self._out = out
        self._clock = clock
        out.write(json.dumps({"format": FORMAT, "version": VERSION}) + "\n")

    def __call__(self, event: Any) -> None:
        line = {"t": round(self._clock(), 4), "e": encode(event)}
        self._out.write(json.dumps(line, ensure_ascii=False) + "\n")
