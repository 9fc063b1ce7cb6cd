"""The node's store of pushed variables: blobs named by their content's hash.

A blob is a file ``~/.skyward/blobs/KEY``, written as its pieces arrive (under a
temporary name) and renamed into place once whole and checked, so a name always holds
the bytes it names. The supervisor owns the store, so it outlives
a crash of the worker (which maps the files it loads). Memory is the page cache: the
kernel keeps recently used blobs there and drops them under pressure, the disk holds the
rest, up to a cap (``SKYWARD_BLOB_CAP`` bytes; else the smaller of 20 GB and half the
disk's free space at start); past it the least recently used blobs not pinned by a
queued cell are deleted. A blob's sha256 is computed as it arrives where another node
will fetch it from here and check its copy against it (a node that serves blobs, or
fetches one); else only if it is ever asked for, from the file (SSH already checks what
crosses it, and 100 MB cost 0.1-0.3 s of this machine's 2 cores). Standard library only.
"""

from __future__ import annotations

import hashlib
import itertools
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
_serials = itertools.count()
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

    __slots__ = ("digest", "fd", "final", "path", "received", "size", "state")

    def __init__(self, path: str, size: int, digest: bool) -> None:
        self.path = path
        self.size = size
        self.received = 0
        self.digest = new_digest() if digest else None
        self.state = "open"  # then "kept" or "failed"
        self.final = ""  # its sha256, once kept
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)


class BlobStore:
    """Blobs on disk by key; thread-safe (pieces arrive on the kernel's channel and from
    the relay at once)."""

    def __init__(self, folder: str, cap: int | None = None) -> None:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        self.folder = folder
        self.cap = default_cap(folder) if cap is None else cap
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # a blob grew, was kept or failed
        self._sizes: dict[str, int] = {}
        self._used: dict[str, float] = {}
        self._incoming: dict[str, _Incoming] = {}
        self._pins: dict[str, int] = {}
        self._digests: dict[str, str] = {}
        self._digesting = threading.Lock()
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

    def write(
        self, key: str, size: int, offset: int, data: bytes | memoryview, digest: bool = True
    ) -> None:
        """Add a piece of blob ``key``; pieces come in order from offset 0. ``digest``
        (at offset 0): follow its sha256 as it arrives."""
        if not key.isalnum() or not key.isascii():
            raise BlobError(f"{key[:20]!r} is not a blob key")
        old = None
        with self._lock:
            incoming = self._incoming.get(key)
            if offset == 0:
                old = incoming
                name = f".{key}.{os.getpid()}.{next(_serials)}"
                incoming = _Incoming(os.path.join(self.folder, name), size, digest)
                self._incoming[key] = incoming
                self._changed.notify_all()
        if offset == 0 and old is not None:
            self._fail(old)
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
        if incoming.digest is not None:
            incoming.digest.update(data)
        with self._lock:
            incoming.received += len(data)
            self._changed.notify_all()

    def finish(self, key: str, expected: str = "") -> None:
        """The last piece came: check its size (and its sha256 against ``expected``, the
        sender's, when given), keep it, evict past the cap."""
        with self._lock:
            incoming = self._incoming.pop(key, None)
        if incoming is None:
            raise BlobError(f"blob {key[:12]}: nothing was received")
        os.close(incoming.fd)
        if incoming.received != incoming.size:
            self._fail(incoming)
            raise BlobError(
                f"blob {key[:12]}: {incoming.received} of {incoming.size} bytes received"
            )
        digest = incoming.digest.hexdigest() if incoming.digest is not None else ""
        if expected and digest != expected:
            self._fail(incoming)
            raise BlobError(f"blob {key[:12]}: its {DIGEST} does not match the sender's")
        os.replace(incoming.path, self.path(key))
        with self._lock:
            self._sizes[key] = incoming.size
            self._used[key] = time.time()
            incoming.final = digest
            if digest:
                self._digests[key] = digest
            incoming.state = "kept"
            self._changed.notify_all()
        self._evict(keep=key)

    def _fail(self, incoming: _Incoming) -> None:
        _abandon(incoming)
        with self._lock:
            incoming.state = "failed"
            self._changed.notify_all()

    def follow(self, key: str, timeout: float) -> tuple[int, int, _Incoming | None]:
        """A file descriptor of blob ``key`` to read from, its size, and (while it still
        arrives) what to ``wait_for``; waits ``timeout`` for it to start arriving, since
        a fetch can overtake the piece that starts it. ``BlobError`` if it never does."""
        with self._lock:
            found = self._changed.wait_for(
                lambda: key in self._incoming or key in self._sizes, timeout
            )
            if not found:
                raise BlobError(f"no blob {key[:12]} here")
            incoming = self._incoming.get(key)
            if incoming is not None:
                return os.open(incoming.path, os.O_RDONLY), incoming.size, incoming
            return os.open(self.path(key), os.O_RDONLY), self._sizes[key], None

    def wait_for(self, incoming: _Incoming, beyond: int, timeout: float) -> int:
        """Bytes of ``incoming`` in its file once more than ``beyond`` are (or all are);
        ``BlobError`` if it failed or stalled for ``timeout``."""
        with self._lock:
            self._changed.wait_for(
                lambda: incoming.received > beyond or incoming.state != "open", timeout
            )
            if incoming.state == "failed":
                raise BlobError("the blob's transfer failed")
            if incoming.received <= beyond and incoming.state == "open":
                raise BlobError("the blob's transfer stalled")
            return incoming.received

    def final_digest(self, key: str, incoming: _Incoming | None, timeout: float) -> str:
        """The sha256 of a blob that was followed while arriving, once it is kept."""
        if incoming is None:
            return self.digest(key)
        with self._lock:
            self._changed.wait_for(lambda: incoming.state != "open", timeout)
            if incoming.state != "kept":
                raise BlobError("the blob was not kept")
            if incoming.final:
                return incoming.final
        return self.digest(key)

    def abandon(self, key: str) -> None:
        """Forget a partly received blob."""
        with self._lock:
            incoming = self._incoming.pop(key, None)
        if incoming is not None:
            self._fail(incoming)

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
                self._digests.pop(key, None)
                doomed.append(key)
        for key in doomed:
            _remove(self.path(key))  # a worker that maps it keeps its pages until it lets go

    def digest(self, key: str) -> str:
        """The blob's sha256 (read from its file the first time; ``OSError`` if gone)."""
        with self._digesting:
            with self._lock:
                known = self._digests.get(key)
            if known:
                return known
            digest = new_digest()
            with open(self.path(key), "rb") as handle:
                while chunk := handle.read(WRITE_CHUNK):
                    digest.update(chunk)
            with self._lock:
                self._digests[key] = known = digest.hexdigest()
            return known

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
