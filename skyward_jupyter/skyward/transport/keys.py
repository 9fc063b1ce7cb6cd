"""Per-cluster SSH keys and per-instance host keys, generated before anything launches.

The client key is written 0600 in the cluster's own folder. Host keys are generated here
and handed to the instance at launch, so the client knows each host key in advance and
pins it: no trust on first use, never ``known_hosts=None``.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import asyncssh

from ..core.provider import ClusterKeys

__all__ = ["data_dir", "generate_host_key", "make_cluster_keys"]


def data_dir() -> Path:
    """Where skyward keeps per-user state (``$XDG_DATA_HOME/skyward``)."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(Path.home(), ".local", "share")
    return Path(base) / "skyward"


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(path, 0o600)


def _make_cluster_keys(cluster_id: str) -> ClusterKeys:
    folder = data_dir() / "keys" / cluster_id
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = asyncssh.generate_private_key("ssh-ed25519", comment=f"skyward-{cluster_id}")
    private_path = folder / "id_ed25519"
    _write_private(private_path, key.export_private_key("openssh"))
    public = key.export_public_key("openssh").decode().strip()
    (folder / "id_ed25519.pub").write_text(public + "\n")
    return ClusterKeys(str(private_path), public)


async def make_cluster_keys(cluster_id: str) -> ClusterKeys:
    """Generate and store the cluster's client key pair."""
    return await asyncio.to_thread(_make_cluster_keys, cluster_id)


def generate_host_key() -> tuple[str, str]:
    """A fresh ed25519 host key: (OpenSSH private text, public line)."""
    key = asyncssh.generate_private_key("ssh-ed25519")
    private = key.export_private_key("openssh").decode()
    return private, key.export_public_key("openssh").decode().strip()
