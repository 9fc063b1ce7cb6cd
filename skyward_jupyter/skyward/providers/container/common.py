"""Small helpers shared by the process and engine runtimes."""

from __future__ import annotations

import os
import re
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from ...core.private_files import data_dir
from ...core.provider import ClusterContext
from ...errors import ProvisionError
from ...model import Offer

__all__ = ["NodeCluster", "default_base_dir", "local_offer", "own", "remove_tree", "safe_name"]


@dataclass
class NodeCluster(ClusterContext):
    """A cluster on this machine: its folder. Each runtime keeps its own nodes in it."""

    dir: Path


N = TypeVar("N", bound=NodeCluster)


def own(context: NodeCluster, kind: type[N]) -> N:
    """``context`` as the runtime's own kind (a runtime is handed only what it made)."""
    if not isinstance(context, kind):
        raise ProvisionError(f"cluster {context.cluster_id} was made by another runtime")
    return context


def default_base_dir() -> Path:
    """``$XDG_DATA_HOME/skyward/container`` (or ``~/.local/share/skyward/container``).

    Created 0700 (parents too) by the runtimes, through ``private_dir``.
    """
    return data_dir() / "container"


def safe_name(text: str) -> str:
    """``text`` usable as one path component and container name."""
    return re.sub(r"[^A-Za-z0-9_.-]", "-", text).strip(".-") or "cluster"


def _memory_gb() -> float:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        return 0.0


def local_offer(instance_type: str) -> Offer:
    """This machine as an offer: free, with its own cores and memory."""
    return Offer(
        provider="container",
        instance_type=instance_type,
        vcpus=float(os.cpu_count() or 1),
        memory_gb=_memory_gb(),
        price_per_hour=0.0,
        region="local",
    )


def remove_tree(path: Path) -> None:
    """Remove a folder, also one whose contents a command made read-only."""

    def retry(func: object, name: str, info: tuple[type, BaseException, object]) -> None:
        if isinstance(info[1], FileNotFoundError):
            return
        parent = os.path.dirname(name)
        os.chmod(parent, os.stat(parent).st_mode | stat.S_IRWXU)
        if os.path.isdir(name) and not os.path.islink(name):
            os.chmod(name, os.stat(name).st_mode | stat.S_IRWXU)
            shutil.rmtree(name, onerror=retry)
        else:
            os.unlink(name)

    if os.path.lexists(path):
        shutil.rmtree(path, onerror=retry)
