"""The seam between the agent client and the bytes: a channel carries protocol frames.

The client speaks the protocol's messages and nothing else; a ``Channel`` carries them to
one node's supervisor and brings its numbered frames back. Over SSH that is the agent's
unix socket, forwarded by asyncssh (``SSHChannel``, opened by ``SSHOpener``); in memory it
is a pair of queues (``MemoryChannel.pair``), so tests can script the agent's end with no
SSH at all, as httpx's ``MockTransport`` stands in for the network. Both encode every
frame with the protocol's own codec, so what cannot cross the wire cannot cross memory.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Protocol, cast

import asyncssh

from .. import protocol
from ..errors import AgentError
from ..protocol import Frame, FrameReader, Message

__all__ = ["Channel", "MemoryChannel", "Opener", "SSHChannel", "SSHOpener"]

READ_CHUNK = 1 << 18  # bytes asked of the socket per read: a burst of lines in one go


class Channel(Protocol):
    """One open channel to a node's agent."""

    def send(self, message: Message, raw: bytes | memoryview = b"") -> int:
        """Queue ``message``, then ``raw`` bytes as they are, without waiting; return the
        bytes this put on the channel."""
        ...

    async def drain(self) -> None:
        """Wait until the channel has room again (after a large ``raw``)."""
        ...

    async def receive(self) -> Iterator[Frame] | None:
        """The next frames (at least one), or None once the far end closed. Raises, here
        or while the frames are taken, if the channel broke (a lost connection, a frame
        that is not plain data)."""
        ...

    def close(self) -> None:
        """Close our end; the far end sees it closed."""
        ...


Opener = Callable[[float], Awaitable[Channel]]
"""Opens a fresh channel to one agent within ``timeout`` seconds (again after a drop)."""


class SSHChannel:
    """A channel over the agent's unix socket, forwarded by an asyncssh connection."""

    def __init__(
        self, reader: asyncssh.SSHReader[bytes], writer: asyncssh.SSHWriter[bytes]
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._frames = FrameReader()

    def send(self, message: Message, raw: bytes | memoryview = b"") -> int:
        data = protocol.pack(message)
        self._writer.write(data)
        if raw:
            # asyncssh copies whatever buffer it is given (bytearray(data)): no copy here
            self._writer.write(cast(bytes, raw))
        return len(data) + len(raw)

    async def drain(self) -> None:
        await self._writer.drain()

    async def receive(self) -> Iterator[Frame] | None:
        while True:
            data = await self._reader.read(READ_CHUNK)
            if not data:
                return None
            frames = self._frames.feed(data)
            first = next(frames, None)
            if first is not None:
                return itertools.chain((first,), frames)

    def close(self) -> None:
        self._writer.close()


class SSHOpener:
    """Opens ``SSHChannel``s to the agent socket at ``socket_path`` over ``connection``,
    waiting for the socket to appear (a freshly started agent has not bound it yet)."""

    def __init__(self, connection: asyncssh.SSHClientConnection, socket_path: str) -> None:
        self.connection = connection
        self.socket_path = socket_path

    async def __call__(self, timeout: float) -> SSHChannel:
        deadline = time.monotonic() + timeout
        delay = 0.01
        while True:
            try:
                reader, writer = await self.connection.open_unix_connection(
                    self.socket_path, encoding=None
                )
            except (OSError, asyncssh.Error) as exc:
                if time.monotonic() + delay > deadline:
                    raise AgentError(
                        f"agent socket {self.socket_path} not reachable within "
                        f"{timeout:.0f} s ({exc})"
                    ) from exc
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.5)
            else:
                return SSHChannel(reader, writer)


class MemoryChannel:
    """One end of a channel held in memory: what one end sends, the other receives.

    Each frame is packed and read back with the protocol's codec, as over SSH; ``send``
    takes a ``seq`` too, for the end that plays the agent.
    """

    def __init__(self) -> None:
        self._inbox: asyncio.Queue[tuple[bytes, bytes] | None] = asyncio.Queue()
        self._frames = FrameReader()
        self._peer: MemoryChannel | None = None
        self.closed = False

    @classmethod
    def pair(cls) -> tuple[MemoryChannel, MemoryChannel]:
        """Two ends joined to each other."""
        one, other = cls(), cls()
        one._peer, other._peer = other, one
        return one, other

    def send(self, message: Message, raw: bytes | memoryview = b"", seq: int = 0) -> int:
        peer = self._peer
        if self.closed or peer is None or peer.closed:
            raise ConnectionResetError("the memory channel is closed")
        data = protocol.pack(message, seq)
        peer._inbox.put_nowait((data, bytes(raw)))
        return len(data) + len(raw)

    async def drain(self) -> None:
        if self.closed:
            raise ConnectionResetError("the memory channel is closed")
        await asyncio.sleep(0)

    async def receive(self) -> Iterator[Frame] | None:
        frames: list[Frame] = []
        item = await self._inbox.get()
        while item is not None:
            data, raw = item
            for frame in self._frames.feed(data):
                frames.append(Frame(frame.message, frame.seq, raw) if raw else frame)
            if self._inbox.empty():
                return iter(frames)
            item = self._inbox.get_nowait()
        self._inbox.put_nowait(None)  # closed: every later receive sees it too
        return iter(frames) if frames else None

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._inbox.put_nowait(None)
        if self._peer is not None:
            self._peer._inbox.put_nowait(None)
