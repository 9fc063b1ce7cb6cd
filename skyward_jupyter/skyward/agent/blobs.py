"""The node's store of pushed variables: blobs named by their content's hash.

A blob is a file ``~/.skyward/blobs/KEY``, written as its pieces arrive (under a
temporary name), checked against the sender's digest and only then renamed into place,
so a name always holds the bytes it names. The supervisor owns the store, so it outlives
a crash of the worker (which maps the files it loads). Memory is the page cache: the
kernel keeps recently used blobs there and drops them under pressure, the disk holds the
rest, up to a cap (``SKYWARD_BLOB_CAP`` bytes; else the smaller of 20 GB and half the
disk's free space at start); past it the least recently used blobs not pinned by a
queued cell are deleted. Standard library only.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Iterable
from typing import Any

__all__ = ["DIGEST", "BlobError", "BlobStore", "default_cap", "new_digest"]

DIGEST = "sha256"
"""The check a node makes of every blob it receives (the standard library's, as the
supervisor has no other)."""

DEFAULT_CAP = 20_000_000_000
WRITE_CHUNK = 4 << 20


def new_digest() -> Any:
    """A fresh hash object of ``DIGEST``."""
    return hashlib.new(DIGEST)


class BlobError(Exception):
    """A blob could not be received or kept (a wrong digest, a full disk, a bad piece)."""


def default_cap(folder: str) -> int:
    """The store's size cap: ``SKYWARD_BLOB_CAP``, else min(20 GB, half the free disk)."""
    configured = os.environ.get("SKYWARD_BLOB_CAP")
    if configured:
        return int(configured)
    try:
        stat = os.statvfs(folder)
    except OSError:
        return DEFAULT_CAP
    return min(DEFAULT_CAP, stat.f_bavail * stat.f_frsize // 2)


class _Incoming:
    """A blob being received: its temporary file, how far it got, its running digest."""

    __slots__ = ("digest", "fd", "path", "received", "size")

    def __init__(self, path: str, size: int) -> None:
        self.path = path
        self.size = size
        self.received = 0
        self.digest = new_digest()
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)


class BlobStore:
    """Blobs on disk by key; thread-safe (pieces arrive on the kernel's channel and from
    the relay at once)."""

    def __init__(self, folder: str, cap: int | None = None) -> None:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        self.folder = folder
        self.cap = default_cap(folder) if cap is None else cap
        self._lock = threading.Lock()
        self._sizes: dict[str, int] = {}
        self._used: dict[str, float] = {}
        self._incoming: dict[str, _Incoming] = {}
        self._pins: dict[str, int] = {}
        for name in os.listdir(folder):
            path = os.path.join(folder, name)
            if name.startswith("."):
                _remove(path)  # a transfer cut by an earlier agent's end
                continue
            try:
                stat = os.stat(path)
            except OSError:
                continue
            self._sizes[name] = stat.st_size
            self._used[name] = stat.st_mtime

    def path(self, key: str) -> str:
        return os.path.join(self.folder, key)

    def has(self, key: str) -> bool:
        with self._lock:
            return key in self._sizes

    def missing(self, keys: Iterable[str]) -> list[str]:
        with self._lock:
            return [k for k in keys if k not in self._sizes]

    def pin(self, keys: Iterable[str]) -> None:
        """Keep ``keys`` (and mark them used) until ``unpin``: a queued cell loads them."""
        now = time.time()
        with self._lock:
            for key in keys:
                self._pins[key] = self._pins.get(key, 0) + 1
                self._used[key] = now

    def unpin(self, keys: Iterable[str]) -> None:
        with self._lock:
            for key in keys:
                left = self._pins.get(key, 0) - 1
                if left > 0:
                    self._pins[key] = left
                else:
                    self._pins.pop(key, None)

    def write(self, key: str, size: int, offset: int, data: bytes | memoryview) -> None:
        """Add a piece of blob ``key``; pieces come in order from offset 0."""
        with self._lock:
            incoming = self._incoming.get(key)
            if offset == 0:
                if incoming is not None:
                    _abandon(incoming)
                incoming = _Incoming(os.path.join(self.folder, f".{key}.{os.getpid()}"), size)
                self._incoming[key] = incoming
        if incoming is None or offset != incoming.received or offset + len(data) > size:
            self.abandon(key)
            raise BlobError(f"blob {key[:12]}: piece at {offset} out of order")
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(incoming.fd, view[:WRITE_CHUNK]) :]
        except OSError as exc:
            self.abandon(key)
            raise BlobError(f"blob {key[:12]}: cannot write it: {exc}") from exc
        incoming.digest.update(data)
        incoming.received += len(data)

    def finish(self, key: str, digest: str) -> None:
        """The last piece came: check the digest, keep the blob, evict past the cap."""
        with self._lock:
            incoming = self._incoming.pop(key, None)
        if incoming is None:
            raise BlobError(f"blob {key[:12]}: nothing was received")
        os.close(incoming.fd)
        if incoming.received != incoming.size:
            _remove(incoming.path)
            raise BlobError(
                f"blob {key[:12]}: {incoming.received} of {incoming.size} bytes received"
            )
        if incoming.digest.hexdigest() != digest:
            _remove(incoming.path)
            raise BlobError(f"blob {key[:12]}: its {DIGEST} does not match what was sent")
        os.replace(incoming.path, self.path(key))
        with self._lock:
            self._sizes[key] = incoming.size
            self._used[key] = time.time()
        self._evict(keep=key)

    def abandon(self, key: str) -> None:
        """Forget a partly received blob."""
        with self._lock:
            incoming = self._incoming.pop(key, None)
        if incoming is not None:
            _abandon(incoming)

    def _evict(self, keep: str) -> None:
        with self._lock:
            total = sum(self._sizes.values())
            if total <= self.cap:
                return
            doomed = []
            for key in sorted(self._sizes, key=lambda k: self._used.get(k, 0.0)):
                if total <= self.cap:
                    break
                if key == keep or key in self._pins:
                    continue
                total -= self._sizes.pop(key)
                self._used.pop(key, None)
                doomed.append(key)
        for key in doomed:
            _remove(self.path(key))  # a worker that maps it keeps its pages until it lets go

    def size(self, key: str) -> int | None:
        with self._lock:
            return self._sizes.get(key)


def _abandon(incoming: _Incoming) -> None:
    try:
        os.close(incoming.fd)
    except OSError:
        pass
    _remove(incoming.path)


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
