"""Waking the kernel's loop when a signal arrives, so that an interrupt is seen at once.

The kernel's SIGINT may be delivered to any of its threads; Python then runs the handler
(which cancels the awaiting cell) in the main thread only when the loop next wakes, which
for a cell awaiting a remote answer may be many seconds later. A wakeup fd read by the
loop makes the C-level handler wake it. Installed only where no wakeup fd is set yet, and
removed at unload.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import threading

__all__ = ["WAKER", "SignalWaker"]


class SignalWaker:
    """The wakeup fd of the kernel's loop, and who waits for the next SIGINT."""

    def __init__(self) -> None:
        self._pair: tuple[socket.socket, socket.socket] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiters: list[asyncio.Future[None]] = []

    @property
    def installed(self) -> bool:
        return self._pair is not None

    async def next_interrupt(self) -> None:
        """Return when the next SIGINT arrives (a second interrupt of a running cell)."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    def install(self) -> None:
        if self._pair is not None or threading.current_thread() is not threading.main_thread():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        reader, writer = socket.socketpair()
        reader.setblocking(False)
        writer.setblocking(False)
        previous = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
        if previous != -1:
            signal.set_wakeup_fd(previous)
            reader.close()
            writer.close()
            return
        loop.add_reader(reader.fileno(), self._drain, reader)
        self._pair, self._loop = (reader, writer), loop

    def _drain(self, reader: socket.socket) -> None:
        received = b""
        try:
            while chunk := reader.recv(4096):
                received += chunk
        except OSError:
            pass
        if signal.SIGINT in received:
            waiters, self._waiters = self._waiters, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    def remove(self) -> None:
        if self._pair is None or threading.current_thread() is not threading.main_thread():
            return
        reader, writer = self._pair
        signal.set_wakeup_fd(-1)
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(reader.fileno())
        reader.close()
        writer.close()
        self._pair = self._loop = None


WAKER = SignalWaker()
