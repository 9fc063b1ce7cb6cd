"""A cell's output budget (``--max-output``): the lines it may still show; past it the
rest is counted and its tail kept for the panel's log. Standard library only.
"""

from __future__ import annotations

from collections import deque

__all__ = ["PANEL_TAIL", "OutputBudget"]

PANEL_TAIL = 200  # lines past a cell's output budget still sent for the panel's log

Line = tuple[str, str, bool]


class OutputBudget:
    """Characters left to the running cell, what was dropped, and the dropped tail."""

    def __init__(self) -> None:
        self.left = 0
        self.dropped = 0
        self.tail: deque[Line] = deque(maxlen=PANEL_TAIL)

    def start(self, budget: int) -> None:
        """A new cell, that may show ``budget`` characters."""
        self.left, self.dropped = budget, 0
        self.tail.clear()

    def take_tail(self) -> list[Line]:
        """The dropped lines kept for the panel (then forgotten)."""
        lines = list(self.tail)
        self.tail.clear()
        return lines

    def cut(self, lines: list[Line]) -> list[Line]:
        """The lines the cell may still show; the rest is counted, its tail kept."""
        if self.left <= 0:
            self.tail.extend(lines)
            self.dropped += sum(len(line[1]) + 1 for line in lines)
            return []
        kept = []
        for i, line in enumerate(lines):
            size = len(line[1]) + 1
            if size > self.left:
                cut = max(0, self.left - 1)
                if cut:
                    kept.append((line[0], line[1][:cut], line[2]))
                self.dropped += size - cut
                rest = lines[i + 1 :]
                self.tail.extend(rest)
                self.dropped += sum(len(r[1]) + 1 for r in rest)
                self.left = 0
                return kept
            self.left -= size
            kept.append(line)
        return kept
