"""The kernel's own code follows each remote cell.

Before a cell runs, the modules imported in the kernel whose files lie outside the
environment (``sys.prefix``, site-packages, any folder holding installed distributions)
are the notebook's helpers, packages under development and editable installs. Their
files go to the node by content hash (``transport.files``): a module rooted in the
notebook's folder goes to the cells' folder on the node (``~/<folder name>``, so relative
paths mean the same there), any other to ``~/.skyward/code`` (on the venv's ``sys.path``
through a ``.pth``). The node then reloads the modules whose files changed
(``agent.code``). When nothing changed, nothing is sent, not even a message.
"""

from __future__ import annotations

import asyncio
import os
import site
import sys
import sysconfig
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from ..transport.files import Manifest, push

__all__ = ["CODE", "CodeSync", "cells_folder", "local_files"]

MAX_FILES = 2000


def cells_folder(cwd: str | None = None) -> str:
    """The cells' folder on a node, relative to its home: the notebook folder's name."""
    name = os.path.basename(os.path.realpath(cwd or os.getcwd())) or "work"
    return name if not name.startswith(".") else f"work{name}"


@cache
def _environment_roots() -> list[str]:
    roots = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        path = sysconfig.get_paths().get(key)
        if path:
            roots.add(path)
    try:
        roots.update(site.getsitepackages())
        roots.add(site.getusersitepackages())
    except Exception:
        pass
    roots.add(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # skyward itself
    return [os.path.realpath(r) + os.sep for r in roots if r]


def _holds_distributions(folder: str) -> bool:
    try:
        return any(n.endswith((".dist-info", ".egg-info")) for n in os.listdir(folder))
    except OSError:
        return True


def _root_of(top: Any) -> tuple[str, str] | None:
    """``(root folder, path of the module or package under it)`` of a top-level module."""
    paths = list(getattr(top, "__path__", []) or [])
    file = getattr(top, "__file__", None)
    if paths:
        package = os.path.realpath(paths[0])
        return os.path.dirname(package), package
    if file and file.endswith(".py"):
        real = os.path.realpath(file)
        return os.path.dirname(real), real
    return None


def _package_files(package: str) -> list[str]:
    found: list[str] = []
    for folder, dirs, files in os.walk(package):
        dirs[:] = [d for d in dirs if d != "__pycache__" and not d.startswith(".")]
        found.extend(os.path.join(folder, f) for f in files if f.endswith(".py"))
        if len(found) > MAX_FILES:
            break
    return sorted(found)


_local: dict[tuple[str, int], tuple[str, str] | None] = {}


def _local_root(name: str, top: Any, environment: list[str]) -> tuple[str, str] | None:
    """``_root_of(top)`` if it is local code, else None; remembered per module object."""
    key = (name, id(top))
    if key in _local:
        return _local[key]
    found = _root_of(top)
    if found is not None and (
        any((found[1] + os.sep).startswith(r) for r in environment)
        or _holds_distributions(found[0])
    ):
        found = None
    _local[key] = found
    return found


def local_files(cwd: str | None = None) -> list[tuple[str, str]]:
    """``(local file, remote path)`` of every local module imported in this kernel."""
    here = os.path.realpath(cwd or os.getcwd())
    folder = cells_folder(here)
    environment = _environment_roots()
    pairs: dict[str, str] = {}
    tops = {name.split(".", 1)[0] for name in list(sys.modules)}
    for name in sorted(tops):
        top = sys.modules.get(name)
        if top is None or name == "__main__":
            continue
        found = _local_root(name, top, environment)
        if found is None:
            continue
        root, path = found
        target = folder if root == here else ".skyward/code"
        files = _package_files(path) if os.path.isdir(path) else [path]
        for file in files:
            relative = os.path.relpath(file, root).replace(os.sep, "/")
            pairs[file] = f"{target}/{relative}"
    return sorted(pairs.items())


@dataclass
class CodeSync:
    """Per instance: what its code folders hold, and the folder its cells run in."""

    manifests: dict[str, Manifest] = field(default_factory=dict)
    folders: dict[str, str] = field(default_factory=dict)
    last_bytes: int = 0
    last_files: int = 0

    async def before_cell(self, targets: list[tuple[str, Any, Any]]) -> None:
        """Send what changed to each ``(instance id, connection, agent)``; tell the agent
        to enter the cells' folder and reload the changed modules."""
        pairs = await asyncio.to_thread(local_files)
        folder = cells_folder()

        async def one(iid: str, connection: Any, agent: Any) -> int:
            manifest = self.manifests.setdefault(iid, Manifest())
            result = await push(connection, pairs, manifest)
            if result.written or self.folders.get(iid) != folder:
                agent.refresh(folder, result.written)
                self.folders[iid] = folder
            return result.bytes_sent

        sent = await asyncio.gather(*(one(*t) for t in targets))
        self.last_bytes = sum(sent)
        self.last_files = len(pairs)

    def forget(self, instance_id: str) -> None:
        """The instance is gone (or replaced): its successor starts empty."""
        self.manifests.pop(instance_id, None)
        self.folders.pop(instance_id, None)


CODE = CodeSync()
"""This kernel's: one manifest per instance, shared with ``%skyward sync``."""
