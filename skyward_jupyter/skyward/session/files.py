"""``%skyward sync``, ``%skyward get`` and ``%skyward put``: files between kernel and nodes.

Paths on a node are relative to its cells' folder (``~/<notebook folder name>``), so
``%skyward sync data`` puts ``data/`` where ``open("data/x.csv")`` in a remote cell finds
it. A folder is sent without what its ``.gitignore`` ignores (git's own rules, where the
folder is in a git work tree), and only the files whose content changed since the last
send. Transfers ride the bootstrap's SSH connections (SFTP).
"""

from __future__ import annotations

import asyncio
import fnmatch
import os
import subprocess
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncssh

from ..errors import AgentError, SkywardError
from ..transport import fanout
from ..transport.agent_client import AgentClient
from ..transport.files import Manifest, PushResult, fan_out, get, push
from .local_code import CODE, cells_folder

__all__ = ["Progress", "folder_files", "size_text", "transfer"]

LARGE = 1_000_000_000  # a folder over this size gets a warning

Progress = Callable[[str], Callable[[int, int], None]]
"""Makes the progress callback ``(done, total)`` of a transfer with this label."""
Say = Callable[[str], None]
Send = Callable[[list[tuple[str, str]], Callable[[int, int], None]], Awaitable[list[PushResult]]]
"""Sends ``(local, remote)`` files to every target, reporting progress; each target's
result."""


def _git_files(folder: str) -> list[str] | None:
    try:
        out = subprocess.run(
            ["git", "-C", folder, "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            capture_output=True,
            timeout=60,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    names = [n for n in out.decode("utf-8", "replace").split("\0") if n]
    return [n for n in names if os.path.isfile(os.path.join(folder, n))]


def _ignore_patterns(folder: str) -> list[str]:
    try:
        with open(os.path.join(folder, ".gitignore")) as handle:
            lines = handle.read().splitlines()
    except OSError:
        return []
    return [ln.strip() for ln in lines if ln.strip() and not ln.startswith(("#", "!"))]


def _ignored(relative: str, patterns: list[str]) -> bool:
    parts = relative.split("/")
    for pattern in patterns:
        bare = pattern.strip("/")
        if "/" in bare:
            if fnmatch.fnmatch(relative, bare) or relative.startswith(bare + "/"):
                return True
        elif any(fnmatch.fnmatch(part, bare) for part in parts):
            return True
    return False


def folder_files(folder: str) -> list[str]:
    """Files of ``folder`` (relative, ``/``-separated) that ``.gitignore`` does not ignore."""
    found = _git_files(folder)
    if found is not None:
        return sorted(found)
    patterns = [".git", "__pycache__", ".ipynb_checkpoints", *_ignore_patterns(folder)]
    names: list[str] = []
    for root, dirs, files in os.walk(folder):
        rel_root = os.path.relpath(root, folder).replace(os.sep, "/")
        rel_root = "" if rel_root == "." else rel_root + "/"
        dirs[:] = [d for d in dirs if not _ignored(rel_root + d, patterns)]
        names.extend(rel_root + f for f in files if not _ignored(rel_root + f, patterns))
    return sorted(names)


def _listing(folder: str) -> tuple[list[str], int]:
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"%skyward sync: {folder!r} is not a folder here")
    names = folder_files(folder)
    return names, sum(os.path.getsize(os.path.join(folder, n)) for n in names)


def _remote_for(local: str) -> str:
    """Where a local path lands on a node, relative to its home."""
    here = os.path.realpath(os.getcwd())
    real = os.path.realpath(local)
    folder = cells_folder(here)
    if real == here:
        return folder
    if real.startswith(here + os.sep):
        return f"{folder}/{os.path.relpath(real, here).replace(os.sep, '/')}"
    return f"{folder}/{os.path.basename(real)}"


def _remote_path(remote: str) -> str:
    if remote.startswith(("/", "~/")):
        return remote[2:] if remote.startswith("~/") else remote
    return f"{cells_folder()}/{remote}"


def size_text(n: float) -> str:
    """``n`` bytes in B, KB, MB or GB (powers of 1000), for the users' lines."""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


async def sync_command(
    targets: list[tuple[int, str, Any]],
    folders: list[str],
    send: Send,
    say: Say,
    warn: Say,
    progress: Progress,
) -> int:
    """Send each folder to every target ``(node, instance id, connection)``; returns the
    bytes sent (0 when every node holds every file already)."""
    total = 0
    for folder in folders or ["."]:
        names, size = await asyncio.to_thread(_listing, folder)
        if size > LARGE:
            warn(
                f"skyward: {folder} holds {size_text(size)} ({len(names)} files) to send to "
                f"{len(targets)} node(s); consider a .gitignore, or data the nodes download"
            )
        remote = _remote_for(folder)
        pairs = [(os.path.join(folder, n), f"{remote}/{n}") for n in names]
        start = time.monotonic()
        bar = progress(f"sync {folder}")
        results = await send(pairs, bar)
        sent = sum(r.bytes_sent for r in results)
        files = sum(len(r.written) for r in results)
        bar(sent, sent)
        total += sent
        say(
            f"synced {folder} → ~/{remote} on {len(targets)} node(s): {files} file(s), "
            f"{size_text(sent)} sent, {sum(r.unchanged for r in results)} unchanged, "
            f"in {time.monotonic() - start:.1f} s"
        )
    return total


async def get_command(
    node: int, connection: Any, remote: str, local: str | None, say: Say, progress: Progress
) -> int:
    """Bring ``remote`` (a file or folder of node ``node``) here; returns its bytes."""
    source = _remote_path(remote)
    target = local or os.path.basename(remote.rstrip("/")) or "download"
    start = time.monotonic()
    size = await get(connection, source, target, progress(f"get {remote}"))
    say(f"node {node}: {remote} → {target} ({size_text(size)} in {time.monotonic() - start:.1f} s)")
    return size


async def put_command(
    targets: list[tuple[int, str, Any]],
    local: str,
    remote: str | None,
    send: Send,
    say: Say,
    progress: Progress,
) -> int:
    """Send the file ``local`` to every target; returns the bytes sent."""
    if not await asyncio.to_thread(os.path.isfile, local):
        raise FileNotFoundError(f"%skyward put: {local!r} is not a file here")
    destination = _remote_path(remote) if remote else _remote_for(local)
    if remote and remote.endswith("/"):
        destination = destination.rstrip("/") + "/" + os.path.basename(local)
    results = await send([(local, destination)], progress(f"put {local}"))
    sent = sum(r.bytes_sent for r in results)
    say(f"put {local} → ~/{destination} on {len(targets)} node(s) ({size_text(sent)} sent)")
    return sent


async def transfer(
    targets: list[tuple[int, str, Any]],
    name: str,
    args: Any,
    say: Say,
    warn: Say,
    progress: Progress,
    relay: tuple[fanout.Relay, list[AgentClient]] | None = None,
) -> None:
    """Run ``%skyward sync|get|put`` with ``args`` to ``(node, instance id, connection)``
    targets; file errors become :class:`SkywardError`. With ``relay`` (the cluster's
    head and each target's agent), files go through the head, once across the kernel's
    link; without, over each target's SFTP."""
    manifests = [CODE.manifests.setdefault(iid, Manifest()) for _, iid, _ in targets]

    async def send(
        pairs: list[tuple[str, str]], bar: Callable[[int, int], None]
    ) -> list[PushResult]:
        if relay is not None:
            return await fan_out(relay[1], manifests, relay[0], pairs, bar)
        return await asyncio.gather(
            *(push(c, pairs, m, bar) for (_, _, c), m in zip(targets, manifests, strict=True))
        )

    if not targets:
        raise SkywardError("no node is connected: `%skyward status` says why")
    try:
        if name == "sync":
            await sync_command(targets, args.dirs, send, say, warn, progress)
        elif name == "put":
            await put_command(targets, args.local, args.remote, send, say, progress)
        else:
            if len(targets) > 1:
                raise SkywardError("%skyward get --on takes one node")
            node, _, connection = targets[0]
            await get_command(node, connection, args.remote, args.local, say, progress)
    except FileNotFoundError as exc:
        raise SkywardError(str(exc)) from None
    except (OSError, asyncssh.SFTPError, AgentError) as exc:
        raise SkywardError(f"%skyward {name}: {exc}") from None
