"""A text progress bar in the cell for file transfers, at most 10 updates a second."""

from __future__ import annotations

import time
from typing import Any

from IPython.display import display

from ..session.files import size_text as _size

__all__ = ["BAR_FROM", "TransferBar"]

BAR_FROM = 8_000_000  # transfers over this size show a progress bar


class TransferBar:
    """The bar of one transfer: call it with (bytes done, bytes in all)."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.start = time.monotonic()
        self.handle: Any = None
        self.last = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if total < BAR_FROM or (now - self.last < 0.1 and done < total):
            return
        self.last = now
        width = 30
        filled = int(width * done / total) if total else width
        rate = done / max(now - self.start, 1e-6)
        text = (
            f"{self.label} [{'#' * filled}{'.' * (width - filled)}] "
            f"{_size(done)} / {_size(total)} ({100 * done / total:.0f}%, {_size(rate)}/s)"
        )
        if self.handle is None:
            self.handle = display({"text/plain": text}, raw=True, display_id=True)
        else:
            self.handle.update({"text/plain": text}, raw=True)
