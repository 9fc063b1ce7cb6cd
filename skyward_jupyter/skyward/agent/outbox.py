"""The supervisor's outbox: numbered frames, a bounded replay buffer, one sender thread.

Frames outlive connections: a client that reconnects says the last frame it saw and gets
every later one again, in order, then the live ones. Standard library only.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from collections import deque
from itertools import islice
from typing import Any

from .. import wire

__all__ = ["Outbox", "close", "log"]

REPLAY_FRAMES = 10_000  # frames kept for reconnecting clients...
REPLAY_BYTES = 256 << 20  # ...and at most this many bytes of them
SEND_BATCH = 8 << 20  # bytes per sendall, so a long replay does not build a huge buffer
INLINE_BYTES = 64 << 10  # frames the emitting thread may send itself, without blocking


def log(message: str) -> None:
    """The agent's own diagnostics (its log file), never a cell's output."""
    line = f"{time.strftime('%H:%M:%S')} skyward.agent[{os.getpid()}] {message}\n"
    try:
        sys.stderr.write(line)
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


class Outbox:
    """Numbers frames, keeps a bounded replay buffer, and sends them from one thread.

    Emitting never blocks on the network: a slow or vanished client must not stall the
    cell. The sender thread writes to whichever connection said hello last.
    """

    def __init__(self, max_frames: int = REPLAY_FRAMES, max_bytes: int = REPLAY_BYTES) -> None:
        self._cond = threading.Condition()
        self._frames: deque[tuple[int, bytes]] = deque()
        self._bytes = 0
        self._max_frames, self._max_bytes = max_frames, max_bytes
        self.seq = 0
        self._conn: socket.socket | None = None
        self._cursor = 0  # last seq handed to the sender for the current connection
        self._first: bytes | None = None  # the hello reply, sent before any replay
        self._leftover = b""  # the part of an inline send the socket did not take
        self._busy = False
        self._waiting_sent = 0  # threads in ``wait_sent``
        threading.Thread(target=self._send_loop, name="skyward-send", daemon=True).start()

    def emit(self, message: dict[str, Any], wake: bool = True) -> int:
        """Number ``message``, buffer it and (unless ``wake`` is False) wake the sender.

        A frame emitted without waking goes out with the next one, or at the flusher's
        next ``kick`` (within ``FLUSH_INTERVAL``): a cell's "started" then shares one
        packet with a quick cell's "done".
        """
        with self._cond:
            self.seq += 1
            message["seq"] = self.seq
            data = wire.encode(message)
            self._frames.append((self.seq, data))
            self._bytes += len(data)
            while len(self._frames) > self._max_frames or (
                self._bytes > self._max_bytes and len(self._frames) > 1
            ):
                self._bytes -= len(self._frames.popleft()[1])
            if not wake:
                return self.seq
            inline = self._take_small()
            if inline is None:
                self._cond.notify_all()
                return self.seq
            conn, batch = inline
        self._send_now(conn, batch)
        return self.seq

    def _take_small(self) -> tuple[socket.socket, bytes] | None:
        """The few small frames waiting, when this thread may send them itself (holding
        ``_cond``): a quick cell's answer then costs no wake-up of the sender thread."""
        conn = self._conn
        if conn is None or self._busy or self._first is not None or self._leftover:
            return None
        waiting = self.seq - self._cursor
        if not 0 < waiting <= 4 or waiting > len(self._frames):
            return None
        frames = [data for _, data in islice(self._frames, len(self._frames) - waiting, None)]
        batch = b"".join(frames)
        if len(batch) > INLINE_BYTES:
            return None
        self._cursor, self._busy = self.seq, True
        return conn, batch

    def _send_now(self, conn: socket.socket, batch: bytes) -> None:
        """Send without blocking; what the socket does not take now goes to the sender."""
        try:
            sent = conn.send(batch, socket.MSG_DONTWAIT)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            log(f"client lost while sending: {exc!r}")
            with self._cond:
                self._busy = False
            self.detach(conn)
            close(conn)
            return
        with self._cond:
            self._busy = False
            if sent < len(batch) and self._conn is conn:
                self._leftover = batch[sent:]
            if self._pending() or self._waiting_sent:  # else the sender would wake for nothing
                self._cond.notify_all()

    def kick(self) -> None:
        """Wake the sender if frames are waiting (the flusher calls this regularly)."""
        with self._cond:
            if self._pending():
                self._cond.notify_all()

    def attach(self, conn: socket.socket, hello: dict[str, Any], since: int) -> None:
        """Make ``conn`` the client: send ``hello`` then every buffered frame after ``since``."""
        with self._cond:
            self._conn = conn
            self._cursor = max(0, min(since, self.seq))
            hello["seq"] = self.seq
            hello["oldest"] = self._frames[0][0] if self._frames else self.seq + 1
            self._first = wire.encode(hello)
            self._cond.notify_all()

    def detach(self, conn: socket.socket) -> None:
        with self._cond:
            if self._conn is conn:
                self._conn = None
                self._first = None
                self._leftover = b""
                self._cond.notify_all()

    def wait_sent(self, timeout: float) -> bool:
        """Wait until the current client has been sent everything (or there is none)."""
        with self._cond:
            self._waiting_sent += 1
            try:
                return self._cond.wait_for(
                    lambda: (
                        self._conn is None
                        or (
                            not self._busy
                            and self._first is None
                            and not self._leftover
                            and self._cursor >= self.seq
                        )
                    ),
                    timeout,
                )
            finally:
                self._waiting_sent -= 1

    def _pending(self) -> bool:
        return self._conn is not None and (
            self._first is not None or bool(self._leftover) or self._cursor < self.seq
        )

    def _send_loop(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending() and not self._busy)
                conn, batch, size = self._conn, [], 0
                if self._first is not None:
                    batch.append(self._first)
                    self._first = None
                if self._leftover:
                    batch.append(self._leftover)
                    self._leftover = b""
                if self._frames and self._cursor < self.seq:
                    oldest = self._frames[0][0]
                    if self._cursor + 1 < oldest:
                        log(f"frames {self._cursor + 1}..{oldest - 1} were dropped unsent")
                        self._cursor = oldest - 1
                    for seq, data in islice(self._frames, self._cursor + 1 - oldest, None):
                        batch.append(data)
                        self._cursor = seq
                        size += len(data)
                        if size >= SEND_BATCH:
                            break
                self._busy = True
            try:
                assert conn is not None
                conn.sendall(b"".join(batch))
            except OSError as exc:
                log(f"client lost while sending: {exc!r}")
                self.detach(conn)  # type: ignore[arg-type]
                close(conn)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()


def close(conn: socket.socket | None) -> None:
    """Shut a client socket down both ways and close it (None is a no-op)."""
    if conn is None:
        return
    try:
        conn.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    conn.close()
