"""The node's blobs as the kernel uses them: pieces arriving on the channel, fetches
from the head node's relay, the relay itself, and the blobs a cell will load (pinned
until it ends, so eviction cannot take them). Standard library only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import shutil
import threading
from collections.abc import Callable
from typing import Any

from .. import protocol
from .blobs import BlobError, BlobStore
from .relay import RelayServer, fetch

__all__ = ["BlobService"]


def _on_a_thread(work: Callable[[Any, Any], None]) -> Callable[[Any, Any], None]:
    """The method runs on a thread of its own, the call returns at once: a fetch or a
    large copy must not hold up the messages behind it."""

    @functools.wraps(work)
    def start(self: Any, request: Any) -> None:
        threading.Thread(target=work, args=(self, request), daemon=True).start()

    return start


class BlobService:
    """Answers the kernel's blob messages through ``emit``."""

    def __init__(self, emit: Callable[[protocol.Message], None]) -> None:
        self._emit = emit
        self.store = BlobStore(os.path.join(os.path.expanduser("~"), ".skyward", "blobs"))
        self._relay: RelayServer | None = None
        self._pinned: dict[str, list[str]] = {}  # blobs a queued cell will load

    def resolve(self, run: protocol.Run) -> protocol.Run | None:
        """The cell with its blob references resolved to files, pinned until it ends;
        None (and ``Missing`` sent) when the store lacks some: the kernel sends them."""
        if not run.push:
            return run
        refs = {name: ref for name, ref in run.push.items() if isinstance(ref, dict)}
        if not refs:
            return run
        keys = [ref["key"] for ref in refs.values()]
        missing = self.store.missing(keys)
        if missing:
            self._emit(protocol.Missing(run.task, missing))
            return None
        self.store.pin(keys)
        self._pinned[run.task] = keys
        push = dict(run.push)
        for name, ref in refs.items():
            push[name] = {**ref, "path": self.store.path(ref["key"])}
        return dataclasses.replace(run, push=push)

    def release(self, task: str | None) -> None:
        """The cell ended (or never ran): its blobs may be evicted again."""
        pinned = self._pinned.pop(task, None) if task is not None else None
        if pinned:
            self.store.unpin(pinned)

    def put(self, piece: protocol.Put, at: int, data: memoryview) -> None:
        """Raw bytes of a blob piece (``at`` bytes into it) went by on the channel."""
        key = piece.key
        try:
            serving = self._relay is not None  # then the others check it by its sha256
            self.store.write(key, piece.size, piece.offset + at, data, digest=serving)
            if piece.offset + at + len(data) < piece.size:
                return
            self.store.finish(key)
        except (BlobError, OSError) as exc:
            self._emit(protocol.Stored(key, False, str(exc)))
            return
        self._emit(protocol.Stored(key, True))

    @_on_a_thread
    def fetch(self, request: protocol.Fetch) -> None:
        """Fetch a blob from the head's relay."""
        key = request.key
        if not self.store.has(key):
            try:
                fetch(
                    self.store,
                    key,
                    request.size,
                    request.host,
                    request.port,
                    request.token,
                    request.timeout,
                )
            except (BlobError, OSError) as exc:
                self._emit(protocol.Stored(key, False, str(exc)))
                return
        self._emit(protocol.Stored(key, True))

    @_on_a_thread
    def place(self, request: protocol.Place) -> None:
        """Copy a blob to a file (its folders made), atomically."""
        target = os.path.join(os.path.expanduser("~"), request.path)
        partial = f"{target}.skyward-{os.getpid()}-{threading.get_ident()}"
        try:
            os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
            # a copy, not a link: a cell that rewrites the file must not change the blob
            shutil.copyfile(self.store.path(request.key), partial)
            os.chmod(partial, request.mode & 0o7777)
            os.replace(partial, target)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(partial)
            self._emit(protocol.Placed(request.path, False, f"{request.path}: {exc}"))
            return
        self._emit(protocol.Placed(request.path, True))

    def serve(self, host: str, token: str) -> None:
        """Serve the store on ``host`` (the private network) to the other nodes."""
        relay = self._relay
        if relay is None or relay.host != host or relay.token != token.encode():
            if relay is not None:
                relay.close()
            try:
                relay = self._relay = RelayServer(self.store, host, token)
            except OSError as exc:
                self._relay = None
                self._emit(protocol.Serving(host, 0, f"cannot listen on {host}: {exc}"))
                return
        self._emit(protocol.Serving(host, relay.port))
