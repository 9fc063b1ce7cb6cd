"""Files between the kernel and a node: SFTP over the node's existing SSH connection.

Sending is by content hash: each node's ``Manifest`` remembers the SHA-256 of what was
last written at each remote path, so a file travels only when its content changed (and
nothing is hashed again while a file's size and mtime stay the same). There is no second
authentication path: every transfer rides the connection the bootstrap opened.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import posixpath
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Manifest", "PushResult", "file_hash", "get", "push"]

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
