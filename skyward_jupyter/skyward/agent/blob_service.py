"""The node's blobs as the kernel uses them: pieces arriving on the channel, fetches
from the head node's relay, the relay itself, and the blobs a cell will load (pinned
until it ends, so eviction cannot take them). Standard library only.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Callable

from .. import protocol
from .blobs import BlobError, BlobStore
from .relay import RelayServer, fetch

__all__ = ["BlobService"]


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

    def fetch(self, request: protocol.Fetch) -> None:
        """Fetch a blob from the head's relay, on a thread of its own."""
        threading.Thread(target=self._fetch, args=(request,), daemon=True).start()

    def _fetch(self, request: protocol.Fetch) -> None:
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
