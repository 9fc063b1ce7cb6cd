"""Blobs sent to a node on this machine straight to its relay, not through SSH.

A node of the ``container`` provider listens on a loopback address: the bytes never leave
this machine, so SSH's encryption (done in Python at both ends: asyncssh here and in the
node's server) buys nothing and cost half the time of a first push. Such a node's relay
(``agent/relay.py``, which already serves the cluster's fetches and checks the token)
takes the blob over one plain TCP connection, kept for the next. Any other address (a
cloud's private network, reached from a laptop) goes through SSH as before; so does every
address when ``SKYWARD_PUSH_OVER_SSH=1`` is set.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket

from ..errors import AgentError
from ..payload import Payload

__all__ = ["PIECE", "Uploader", "direct_allowed"]

PIECE = 16 << 20  # bytes handed to the socket at a time (no copy: views of the parts)
CONNECT_TIMEOUT = 2.0
ANSWER_TIMEOUT = 300.0


def direct_allowed(host: str) -> bool:
    """Whether blobs for a relay on ``host`` may skip SSH: a loopback address, and not
    turned off by ``SKYWARD_PUSH_OVER_SSH``."""
    if os.environ.get("SKYWARD_PUSH_OVER_SSH", "") not in ("", "0"):
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Uploader:
    """One node's relay as seen from the kernel: a TCP connection, opened on first use
    and kept; ``failed`` once an upload failed (then blobs go through SSH)."""

    def __init__(self, node: int) -> None:
        self.node = node
        self.failed = False
        self.bytes_sent = 0
        self._sock: socket.socket | None = None
        self._address: tuple[str, int] | None = None
        self._lock = asyncio.Lock()

    async def send(self, payload: Payload, host: str, port: int, token: str, digest: bool) -> None:
        """Have the relay at ``host:port`` keep ``payload``'s blob (``digest``: other
        nodes will fetch it, so it follows its sha256 as it arrives); ``AgentError`` if
        it does not."""
        async with self._lock:  # one blob at a time on the connection
            for retry in (False, True):
                kept = self._sock is not None and self._address == (host, port)
                try:
                    answer = await self._upload(payload, host, port, token, digest)
                    break
                except (OSError, TimeoutError) as exc:
                    self.close()
                    if kept and not retry:
                        continue  # the kept connection had died (a restarted agent)
                    self.failed = True
                    raise AgentError(
                        f"node {self.node}: sending a blob to {host}:{port} failed: {exc!r}"
                    ) from exc
                except BaseException:
                    # cut mid-blob (an interrupt): closing makes the relay drop what it
                    # got, where the next blob's bytes would otherwise continue this one
                    self.close()
                    raise
            if answer != b"OK":
                self.failed = True
                self.close()
                reason = answer.removeprefix(b"NO ").decode("utf-8", "replace") or "closed"
                raise AgentError(f"node {self.node}: its relay did not keep a blob: {reason}")

    async def _upload(
        self, payload: Payload, host: str, port: int, token: str, digest: bool
    ) -> bytes:
        loop = asyncio.get_running_loop()
        sock = await self._connected(host, port)
        head = b"SKYWARD-PUT %s %s %d %d\n" % (
            token.encode(),
            payload.key.encode(),
            payload.size,
            int(digest),
        )
        await loop.sock_sendall(sock, head)
        for _, piece in payload.pieces(PIECE):
            await loop.sock_sendall(sock, piece)
            self.bytes_sent += len(piece)
            payload.sent(len(piece))
        return await asyncio.wait_for(_read_line(loop, sock), ANSWER_TIMEOUT)

    async def _connected(self, host: str, port: int) -> socket.socket:
        if self._sock is not None and self._address == (host, port):
            return self._sock
        self.close()
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        sock.setblocking(False)
        try:
            await asyncio.wait_for(
                asyncio.get_running_loop().sock_connect(sock, (host, port)), CONNECT_TIMEOUT
            )
        except BaseException:
            sock.close()
            raise
        self._sock, self._address = sock, (host, port)
        return sock

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()


async def _read_line(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> bytes:
    """The relay's one-line answer (it sends nothing else after an upload)."""
    line = b""
    while not line.endswith(b"\n"):
        chunk = await loop.sock_recv(sock, 512)
        if not chunk:
            break
        line += chunk
    return line.rstrip(b"\n")
