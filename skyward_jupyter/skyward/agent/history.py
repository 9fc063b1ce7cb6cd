"""What a cell prints, kept in IPython's output history (``%notebook`` exports it).

IPython records a cell's stdout and stderr by wrapping each ``write`` (``_tee``); on a
node that wrapper cost more than the print itself (70 % of a 100k-line cell). The worker
already holds every write as ordered chunks and joins a stream's run of them at each
flush, so the history is filled there instead, a run at a time, with IPython's own record
type and merging. Callers hold the worker's lock.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import groupby
from operator import itemgetter
from typing import Any

__all__ = ["OutputHistory", "join_runs"]

_name, _text = itemgetter(0), itemgetter(1)


def join_runs(chunks: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """One ``(stream, text)`` per run of a stream (``print`` writes its text and its
    newline apart)."""
    return [(name, "".join(map(_text, run))) for name, run in groupby(chunks, _name)]


class OutputHistory:
    """Which chunks of the worker's list belong to the running cell's history."""

    def __init__(self, outputs: Callable[[], Any]) -> None:
        self._outputs = outputs  # IPython's ``history_manager.outputs`` (by count)
        self.count: int | None = None  # the cell being recorded
        self._skip = 0  # chunks at the head of the list already recorded, or older

    def start(self, count: int, chunks: list[tuple[str, str]]) -> None:
        """Record what is written from now on as cell ``count``'s."""
        self.count, self._skip = count, len(chunks)

    def stop(self, chunks: list[tuple[str, str]]) -> None:
        """The cell ended: what it wrote and no flush took yet is recorded now."""
        self.note(chunks)
        self.count, self._skip = None, 0

    def note(self, chunks: list[tuple[str, str]]) -> None:
        """Record the chunks still waiting (before a result enters the history, so the
        order is the cell's)."""
        if self.count is not None and len(chunks) > self._skip:
            self._add(join_runs(chunks[self._skip :]))
            self._skip = len(chunks)

    def taken(self, items: list[tuple[str, str]], joined: list[tuple[str, str]]) -> None:
        """A flush took ``items`` (``joined`` by runs) from the head of the list."""
        if self.count is None:
            return
        skipped = min(self._skip, len(items))
        self._skip -= skipped
        if skipped == len(items):
            return
        self._add(joined if not skipped else join_runs(items[skipped:]))

    def _add(self, joined: list[tuple[str, str]]) -> None:
        from IPython.core.history import HistoryOutput

        outputs = self._outputs()[self.count]
        for name, text in joined:
            kind = "out_stream" if name == "stdout" else "err_stream"
            if outputs and outputs[-1].output_type == kind:
                outputs[-1].bundle["stream"].append(text)
            else:
                outputs.append(HistoryOutput(output_type=kind, bundle={"stream": [text]}))
