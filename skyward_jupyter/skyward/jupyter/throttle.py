"""One throttle for what the kernel sends to the browser (cell output, the panel).

However fast events arrive, a :class:`Throttle` calls its ``flush`` at most ``rate`` times
a second, on the kernel's loop (``loop.call_later``, never a thread): the browser is
sent what changed in a batch, not once per event.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable

__all__ = ["Throttle"]


class Throttle:
    """Calls ``flush`` at most ``rate`` times a second while something is pending.

    ``flush`` may return how many messages it sent; with ``messages`` (most messages a
    second) the next flush then waits long enough to keep under it. With ``context``,
    ``flush`` runs in it: ipykernel keeps the parent message in a context variable, and
    that is what sends a display to the cell that made the throttle.
    """

    def __init__(
        self,
        flush: Callable[[], int | None],
        rate: float,
        messages: float | None = None,
        context: contextvars.Context | None = None,
    ) -> None:
        self._flush = flush
        self._period = 1.0 / rate
        self._spacing = 1.0 / messages if messages else 0.0
        self._context = context
        self._handle: asyncio.TimerHandle | None = None
        self._next = float("-inf")
        self.flushes = 0

    @property
    def pending(self) -> bool:
        """Whether a flush is scheduled."""
        return self._handle is not None

    def poke(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Something changed: flush soon (now if the last flush is old enough)."""
        if self._handle is not None:
            return
        loop = loop or asyncio.get_running_loop()
        delay = max(0.0, self._next - loop.time())
        self._handle = loop.call_later(delay, self._fire, loop, context=self._context)

    def _fire(self, loop: asyncio.AbstractEventLoop) -> None:
        self._handle = None
        self._run(loop.time())

    def flush_now(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Flush at once (a snapshot is due), cancelling the scheduled flush."""
        self.cancel()
        self._run((loop or asyncio.get_running_loop()).time())

    def _run(self, now: float) -> None:
        self.flushes += 1
        self._next = now + self._period  # a poke from inside ``flush`` waits its turn
        sent = self._flush() or 1
        self._next = max(self._next, now + sent * self._spacing)

    def cancel(self) -> None:
        """Drop the scheduled flush."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
