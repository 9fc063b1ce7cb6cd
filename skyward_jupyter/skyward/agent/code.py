"""The kernel's local code on the node: the cells' folder, and reloading what changed.

Changed modules are reloaded with ``importlib.reload``, not dropped for a fresh import:
the namespace holds the module objects earlier cells imported (``import helpers`` binds
``helpers``), and a reload updates that very object, so ``helpers.f()`` in the next cell
runs the new code whether or not the cell imports again. A module whose new code fails to
load is removed from ``sys.modules`` instead, so the cell's own ``import`` raises the real
error at its line. Standard library only.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys

from ..protocol import Refresh

__all__ = ["refresh"]

_state: dict[str, str] = {"cwd": ""}


def _chdir(cwd: str) -> None:
    os.makedirs(cwd, exist_ok=True)
    os.chdir(cwd)
    old = _state["cwd"]
    if old and old in sys.path:
        sys.path.remove(old)
    if cwd in sys.path:
        sys.path.remove(cwd)
    sys.path.insert(0, cwd)
    _state["cwd"] = cwd


def _modules_of(paths: set[str]) -> list[str]:
    found = []
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if file and os.path.realpath(file) in paths:
            found.append(name)
    return sorted(found, key=lambda n: (-n.count("."), n))  # submodules first


def refresh(message: Refresh) -> None:
    """Enter the cells' folder; reload the modules whose files the kernel just sent."""
    home = os.path.expanduser("~")
    if message.cwd:
        _chdir(os.path.join(home, message.cwd))
    importlib.invalidate_caches()
    paths = set()
    for path in message.changed:
        real = os.path.realpath(os.path.join(home, path))
        paths.add(real)
        try:
            os.unlink(importlib.util.cache_from_source(real))
        except (OSError, ValueError, NotImplementedError):
            pass
    for name in _modules_of(paths):
        module = sys.modules.get(name)
        if module is None:
            continue
        try:
            importlib.reload(module)
        except BaseException:
            sys.modules.pop(name, None)
