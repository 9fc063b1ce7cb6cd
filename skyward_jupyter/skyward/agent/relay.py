"""Blobs between the nodes of a cluster, over their private network.

The kernel sends a blob once, to the head node; the head serves it (``RelayServer``) and
every other node fetches it from there (``fetch``) in parallel, so the kernel's uplink,
the scarce link, carries it once. Only the cluster can fetch: a request shows the
cluster's token, which the kernel handed to each node over SSH. What arrives is checked
against the head's sha256 of its copy before it is kept (the kernel-to-head leg is
checked by SSH's own MAC). Standard library only.

A request is one line, ``SKYWARD-BLOB TOKEN KEY``; the answer is ``OK SIZE``, the blob's
bytes (with ``sendfile``) and a line with its sha256, or ``NO why``. A blob still arriving
at the head is relayed as it arrives (so the fan-out costs little more than the upload),
and its sha256 follows once the head has all of it.

A kernel on the node's own machine (the ``container`` provider: nodes on loopback) sends
its blobs here too, sparing the SSH channel's encryption at both ends: ``SKYWARD-PUT
TOKEN KEY SIZE DIGEST``, then SIZE bytes, answered ``OK`` or ``NO why``, any number of
times on one connection. DIGEST 1: follow the blob's sha256 as it arrives (other nodes
will fetch it from here).
"""

from __future__ import annotations

import hmac
import os
import socket
import threading

from .blobs import BlobError, BlobStore
from .outbox import close, log

__all__ = ["RelayServer", "fetch", "receive"]

MAGIC = b"SKYWARD-BLOB"
UPLOAD = b"SKYWARD-PUT"
RECEIVE = 4 << 20  # bytes per receive into the store
WAIT = 30.0  # seconds the relay waits for a blob to start, or go on, arriving


class RelayServer:
    """Listens on ``host`` (a port the system picks) and serves the store's blobs."""

    def __init__(self, store: BlobStore, host: str, token: str) -> None:
        self.store = store
        self.token = token.encode()
        self.host = host
        self._listener = socket.create_server((host, 0), backlog=64)
        self.port: int = self._listener.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._accept_loop, name="skyward-relay", daemon=True).start()

    def _accept_loop(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError as exc:
                if not self._closed:
                    log(f"relay: accept failed: {exc!r}")
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        request: list[bytes] = [b""]
        try:
            conn.settimeout(10.0)
            while True:
                request = _read_line(conn).split(b" ")
                if len(request) < 3 or request[0] not in (MAGIC, UPLOAD):
                    return
                if not hmac.compare_digest(request[1], self.token):
                    conn.sendall(b"NO wrong token\n")
                    return
                key = request[2].decode("ascii", "replace")
                if not key.isalnum():
                    return
                if request[0] == MAGIC and len(request) == 3:
                    self._send(conn, key)
                    return
                if len(request) != 5 or not self._take(conn, key, request[3], request[4]):
                    return
        except BlobError as exc:
            log(f"relay: blob {request[2][:12]!r} not served: {exc}")
        except OSError as exc:
            log(f"relay: serving a blob failed: {exc!r}")
        finally:
            close(conn)

    def _send(self, conn: socket.socket, key: str) -> None:
        """Serve blob ``key`` to a node fetching it (while it arrives, as it arrives)."""
        try:
            fd, size, incoming = self.store.follow(key, WAIT)
        except BlobError as exc:
            conn.sendall(b"NO %s\n" % str(exc).encode())
            return
        try:
            conn.sendall(b"OK %d\n" % size)
            conn.settimeout(None)
            sent = 0
            while sent < size:
                ready = size if incoming is None else self.store.wait_for(incoming, sent, WAIT)
                while sent < ready:
                    sent += os.sendfile(conn.fileno(), fd, sent, ready - sent)
            digest = self.store.final_digest(key, incoming, WAIT)
            conn.sendall(digest.encode() + b"\n")
        finally:
            os.close(fd)

    def _take(self, conn: socket.socket, key: str, size: bytes, digest: bytes) -> bool:
        """Keep the blob a kernel uploads; answer it, and say whether the connection can
        carry another."""
        try:
            length = int(size)
            conn.settimeout(WAIT)
            receive(self.store, conn, key, length, digest == b"1", "the kernel")
            self.store.finish(key)
        except (BlobError, OSError, ValueError) as exc:
            self.store.abandon(key)
            conn.sendall(b"NO %s\n" % str(exc).encode())
            return False
        conn.sendall(b"OK\n")
        conn.settimeout(None)  # the kernel keeps the connection for its next upload
        return True

    def close(self) -> None:
        self._closed = True
        close(self._listener)


def fetch(
    store: BlobStore,
    key: str,
    size: int,
    host: str,
    port: int,
    token: str,
    timeout: float = 2.0,
) -> None:
    """Fetch blob ``key`` from the relay at ``host:port`` into ``store``; ``BlobError``
    says why it could not (the relay unreachable within ``timeout``, a wrong digest)."""
    try:
        conn = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        raise BlobError(f"cannot reach the head node at {host}:{port}: {exc}") from exc
    try:
        conn.sendall(b"%s %s %s\n" % (MAGIC, token.encode(), key.encode()))
        conn.settimeout(max(30.0, timeout))
        answer = _read_line(conn)
        if not answer.startswith(b"OK "):
            raise BlobError(f"the head node refused blob {key[:12]}: {answer[3:].decode()}")
        if int(answer[3:]) != size:
            raise BlobError(f"the head node holds blob {key[:12]} with another size")
        receive(store, conn, key, size, True, "the head node")
        store.finish(key, _read_line(conn).decode("ascii", "replace"))
    except (OSError, ValueError) as exc:
        store.abandon(key)
        raise BlobError(f"fetching blob {key[:12]} from {host}:{port} failed: {exc}") from exc
    except BlobError:
        store.abandon(key)
        raise
    finally:
        close(conn)


def receive(
    store: BlobStore, conn: socket.socket, key: str, size: int, digest: bool, sender: str
) -> None:
    """Write the ``size`` bytes that follow on ``conn`` into ``store`` as blob ``key``
    (``digest``: follow its sha256); ``BlobError`` if ``sender`` stops short."""
    view = memoryview(bytearray(min(RECEIVE, max(size, 1))))
    offset = 0
    if not size:
        store.write(key, size, 0, b"", digest=digest)
    while offset < size:
        got = conn.recv_into(view[: min(len(view), size - offset)])
        if not got:
            raise BlobError(f"{sender} closed at {offset} of {size} bytes")
        # the first piece starts the blob (a relay's followers follow that one)
        store.write(key, size, offset, view[:got], digest=digest)
        offset += got


def _read_line(conn: socket.socket, limit: int = 512) -> bytes:
    """One ``\\n``-terminated line, read byte by byte (nothing past it is consumed)."""
    line = bytearray()
    while len(line) < limit:
        byte = conn.recv(1)
        if not byte or byte == b"\n":
            break
        line += byte
    return bytes(line)
