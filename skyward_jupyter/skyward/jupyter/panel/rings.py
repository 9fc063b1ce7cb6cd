"""The bounded buffers of one node: its log rows (:class:`LogRing`) and its metric points
(:class:`MetricSeries`).

The ring applies ``overwrite`` the way ``jupyter/output.py`` does (it replaces the
previous line of the same stream) and also follows ``ESC[A`` (cursor up, what tqdm writes
to redraw several bars), so a progress bar stays one row however often it is redrawn,
and memory stays flat however long a run is.
"""

from __future__ import annotations

import re
from array import array
from collections.abc import Sequence

__all__ = ["LOG_LINES", "METRIC_POINTS", "LogRing", "MetricSeries"]

LOG_LINES = 2000
"""Rows kept per node (bootstrap console and task output together)."""
METRIC_POINTS = 1000
"""Points kept per node and metric."""
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

    def forget_changes(self) -> None:
        """Mark every row taken: a snapshot of the ring carries them."""
        self._changed.clear()

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
