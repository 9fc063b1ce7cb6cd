"""Files between the kernel and a node: SFTP over the node's existing SSH connection.

Sending is by content hash: each node's ``Manifest`` remembers the SHA-256 of what was
last written at each remote path, so a file travels only when its content changed (and
nothing is hashed again while a file's size and mtime stay the same). There is no second
authentication path: every transfer rides the connection the bootstrap opened.

To several nodes (or one on this machine), ``fan_out`` sends a file the way pushed
variables go instead: once across the kernel's link, to the head node, which relays it to
the others over the private network (``fanout.deliver``); each node then copies the blob
into place (``AgentClient.place``).
"""

from __future__ import annotations

import asyncio
import hashlib
import mmap
import os
import posixpath
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..payload import Payload, make_payload
from . import fanout
from .agent_client import AgentClient

__all__ = ["Manifest", "PushResult", "fan_out", "file_hash", "get", "push"]

Progress = Callable[[int, int], None]
"""``(bytes done, bytes in all)``."""
SftpProgress = Callable[[bytes, bytes, int, int], None]
"""asyncssh's ``progress_handler``: ``(source, destination, bytes moved, file size)``."""

_hashes: dict[str, tuple[int, int, str]] = {}


def file_hash(path: str) -> str:
    """SHA-256 of a file, cached while its size and mtime stay the same."""
    st = os.stat(path)
    cached = _hashes.get(path)
    if cached is not None and cached[0] == st.st_mtime_ns and cached[1] == st.st_size:
        return cached[2]
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    value = digest.hexdigest()
    _hashes[path] = (st.st_mtime_ns, st.st_size, value)
    return value


@dataclass
class Manifest:
    """What one node holds, as the kernel wrote it: remote path → content hash."""

    hashes: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PushResult:
    """What a push sent: the remote paths written and their bytes."""

    written: tuple[str, ...] = ()
    bytes_sent: int = 0
    unchanged: int = 0


def _changed(
    pairs: list[tuple[str, str]], manifest: Manifest
) -> tuple[list[tuple[str, str, str, int]], int]:
    todo = []
    same = 0
    for local, remote in pairs:
        digest = file_hash(local)
        if manifest.hashes.get(remote) == digest:
            same += 1
        else:
            todo.append((local, remote, digest, os.path.getsize(local)))
    return todo, same


def _handler(progress: Progress | None, base: int, total: int) -> SftpProgress | None:
    """SFTP's progress handler for one file: ``base`` bytes were moved before it."""
    if progress is None:
        return None

    def handler(_src: bytes, _dst: bytes, moved: int, _all: int) -> None:
        progress(base + moved, total)

    return handler


async def push(
    connection: Any,
    pairs: list[tuple[str, str]],
    manifest: Manifest,
    progress: Progress | None = None,
) -> PushResult:
    """Write each ``(local, remote)`` file whose content the node does not hold yet.

    Remote paths are relative to the node's home (or absolute); folders are made.
    """
    todo, same = await asyncio.to_thread(_changed, pairs, manifest)
    if not todo:
        return PushResult(unchanged=same)
    total = sum(size for *_, size in todo)
    done = 0
    async with connection.start_sftp_client() as sftp:
        made: set[str] = set()
        for local, remote, digest, size in todo:
            folder = posixpath.dirname(remote)
            if folder and folder not in made:
                await sftp.makedirs(folder, exist_ok=True)
                made.add(folder)
            await sftp.put(local, remote, progress_handler=_handler(progress, done, total))
            done += size
            manifest.hashes[remote] = digest
    if progress is not None:
        progress(total, total)
    return PushResult(tuple(r for _, r, _, _ in todo), total, same)


async def fan_out(
    agents: Sequence[AgentClient],
    manifests: Sequence[Manifest],
    relay: fanout.Relay,
    pairs: list[tuple[str, str]],
    progress: Progress | None = None,
) -> list[PushResult]:
    """``push`` to each of ``agents`` (with its manifest), each file crossing the
    kernel's link once however many nodes need it. The bytes sent are counted in the
    first node's result."""
    todos = await asyncio.to_thread(lambda: [_changed(pairs, m) for m in manifests])
    wanted: dict[str, list[tuple[int, str, str]]] = {}  # local → (node index, remote, hash)
    sizes: dict[str, int] = {}
    for index, (todo, _) in enumerate(todos):
        for local, remote, digest, size in todo:
            wanted.setdefault(local, []).append((index, remote, digest))
            sizes[local] = size
    total = sum(sizes.values())
    done = 0
    for local, places in wanted.items():
        payload, mode = await asyncio.to_thread(_file_payload, local)
        if progress is not None:
            payload.on_sent = _counting(progress, done, payload.size, total)
        needing = [agents[i] for i, _, _ in places]  # a node lands a local file once
        if payload.inline:  # too small to relay: straight over each node's channel
            await asyncio.gather(*(a.put(payload) for a in needing if payload.key not in a.blobs))
        else:
            await fanout.deliver(needing, [payload], relay)
        await asyncio.gather(
            *(agents[i].place(payload.key, remote, mode) for i, remote, _ in places)
        )
        for index, remote, digest in places:
            manifests[index].hashes[remote] = digest
        done += payload.size
        if progress is not None:
            progress(done, total)
    return [
        PushResult(tuple(r for _, r, _, _ in todo), total if index == 0 else 0, same)
        for index, (todo, same) in enumerate(todos)
    ]


def _counting(progress: Progress, start: int, size: int, total: int) -> Callable[[int], None]:
    """The progress of one file's pieces, from ``start`` to ``start + size`` of ``total``
    (a file sent straight to several nodes counts once)."""
    moved = start

    def step(count: int) -> None:
        nonlocal moved
        moved = min(moved + count, start + size)
        progress(moved, total)

    return step


def _file_payload(local: str) -> tuple[Payload, int]:
    """A file's bytes as a blob (mapped, not read into memory) and its permission bits."""
    with open(local, "rb") as handle:
        info = os.fstat(handle.fileno())
        data = (
            memoryview(mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ))
            if info.st_size
            else memoryview(b"")
        )
    return make_payload(os.path.basename(local), data, []), stat.S_IMODE(info.st_mode)


async def get(connection: Any, remote: str, local: str, progress: Progress | None = None) -> int:
    """Bring a file or a folder (recursively) from the node; returns the bytes received."""
    async with connection.start_sftp_client() as sftp:
        files: list[tuple[str, str, int]] = []

        async def walk(src: str, dst: str) -> None:
            attrs = await sftp.stat(src)
            if attrs.type == 2:  # a directory
                for entry in await sftp.readdir(src):
                    if entry.filename in (".", ".."):
                        continue
                    await walk(
                        posixpath.join(src, entry.filename), os.path.join(dst, entry.filename)
                    )
            else:
                files.append((src, dst, attrs.size or 0))

        await walk(remote, local)
        total = sum(size for *_, size in files)
        done = 0
        for src, dst, size in files:
            os.makedirs(os.path.dirname(dst) or ".", exist_ok=True)
            await sftp.get(src, dst, progress_handler=_handler(progress, done, total))
            done += size
        if progress is not None:
            progress(total, total)
        return total
