"""Per-cluster SSH keys and per-instance host keys, generated before anything launches.

The client key is written 0600 in the cluster's own 0700 folder, and that folder is
removed once the cluster's destruction is confirmed (a key that outlives its machines
is only something to steal). Host keys are generated here and handed to the instance
at launch, so the client knows each host key in advance and pins it: no trust on first
use, never ``known_hosts=None``.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from pathlib import Path

import asyncssh

from ..core.private_files import data_dir, private_dir
from ..core.provider import ClusterKeys

__all__ = [
    "cluster_keys_dir",
    "data_dir",
    "forget_cluster_keys",
    "generate_host_key",
    "make_cluster_keys",
]

_CLUSTER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def cluster_keys_dir(cluster_id: str) -> Path:
    """The folder of one cluster's keys (``$XDG_DATA_HOME/skyward/keys/<cluster>``)."""
    if not _CLUSTER_ID.fullmatch(cluster_id):
        raise ValueError(f"not a cluster id: {cluster_id!r}")
    return data_dir() / "keys" / cluster_id


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write(data)


def _make_cluster_keys(cluster_id: str) -> ClusterKeys:
    folder = private_dir(cluster_keys_dir(cluster_id))
    key = asyncssh.generate_private_key("ssh-ed25519", comment=f"skyward-{cluster_id}")
    private_path = folder / "id_ed25519"
    _write_private(private_path, key.export_private_key("openssh"))
    public = key.export_public_key("openssh").decode().strip()
    (folder / "id_ed25519.pub").write_text(public + "\n")
    return ClusterKeys(str(private_path), public)


async def make_cluster_keys(cluster_id: str) -> ClusterKeys:
    """Generate and store the cluster's client key pair."""
    return await asyncio.to_thread(_make_cluster_keys, cluster_id)


def _forget_cluster_keys(cluster_id: str) -> None:
    try:
        folder = cluster_keys_dir(cluster_id)
    except ValueError:
        return  # never a path built from a damaged ledger's text
    if folder.is_symlink():
        folder.unlink()
    elif folder.exists():
        shutil.rmtree(folder)


async def forget_cluster_keys(cluster_id: str) -> None:
    """Delete a cluster's keys folder: call only once its destruction is confirmed."""
    await asyncio.to_thread(_forget_cluster_keys, cluster_id)


def generate_host_key() -> tuple[str, str]:
    """A fresh ed25519 host key: (OpenSSH private text, public line)."""
    key = asyncssh.generate_private_key("ssh-ed25519")
    private = key.export_private_key("openssh").decode()
    return private, key.export_public_key("openssh").decode().strip()
