"""The kernel's environment, described so that a node can be made to match it.

Every installed distribution is read with ``importlib.metadata`` (the first of a name on
``sys.path`` wins, as it does for imports). What came from an index is pinned to the
kernel's version; what cannot come from an index (an editable or local-folder install, a
local wheel, a VCS checkout) is named with the reason and left out; what serves only the
notebook's frontend stays behind (``FRONTEND_ONLY``). Packages of the GPU stack (torch and
its kin) are pinned without a local build label on a node with GPUs, so the build that
matches the node's accelerator is chosen there, not the kernel's CPU build.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from importlib.metadata import Distribution, distributions
from typing import Any

from packaging.utils import canonicalize_name

__all__ = [
    "FRONTEND_ONLY",
    "GPU_STACK",
    "Environment",
    "Skipped",
    "describe_environment",
    "distribution_of_module",
]

FRONTEND_ONLY = (
    "jupyterlab",
    "jupyterlab-server",
    "jupyter-server",
    "jupyter-server-terminals",
    "jupyter-lsp",
    "notebook",
    "notebook-shim",
    "nbclassic",
    "jupyterlab-widgets",
    "widgetsnbextension",
    "sidecar",
    "skyward-jupyter",
)
"""Left behind: the Jupyter server and JupyterLab (with their widget and sidebar
extensions) serve the browser and never run in a cell; ``skyward-jupyter`` itself is the
kernel's side (the node gets its agent from the bootstrap, in the kernel's version)."""

GPU_STACK = ("torch", "torchvision", "torchaudio", "triton", "jax", "jaxlib", "xformers")
"""Built per accelerator: on a node with GPUs, the node's build wins (``--torch-backend``)."""


@dataclass(frozen=True, slots=True)
class Skipped:
    """A distribution of the kernel that a node does not get, and why."""

    name: str
    version: str
    reason: str


@dataclass(frozen=True, slots=True)
class Environment:
    """What a node installs (``pins``) and what it does not (``skipped``, ``left_behind``)."""

    pins: list[str] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    left_behind: list[str] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)


def _direct_url(dist: Distribution) -> dict[str, Any] | None:
    try:
        text = dist.read_text("direct_url.json")
    except Exception:
        return None
    if not text:
        return None
    try:
        found = json.loads(text)
    except ValueError:
        return None
    return found if isinstance(found, dict) else None


def _origin(dist: Distribution) -> tuple[str | None, str | None]:
    """``(requirement, None)`` for what a node can install, ``(None, why)`` otherwise."""
    name, version = dist.metadata["Name"], dist.version
    direct = _direct_url(dist)
    if direct is None:
        return f"{name}=={version}", None
    url = str(direct.get("url", ""))
    if "dir_info" in direct:
        if direct["dir_info"].get("editable"):
            return None, "an editable install: its imported code follows the cells"
        return None, f"installed from a local folder ({url})"
    if "vcs_info" in direct:
        return None, f"installed from {direct['vcs_info'].get('vcs', 'a VCS')} ({url})"
    if url.startswith(("http://", "https://")):
        return f"{name} @ {url}", None
    return None, f"installed from a local file ({url})"


def _gpu_pin(name: str, version: str) -> str:
    public = version.split("+", 1)[0]
    return f"{name}=={public}"


def describe_environment(gpu: bool = False, exclude: tuple[str, ...] = ()) -> Environment:
    """The kernel's distributions as a node should install them.

    ``gpu``: the node has accelerators (GPU-stack pins lose their local label, e.g.
    ``+cpu``); ``exclude``: names the user installs otherwise (``--pip``).
    """
    excluded = {canonicalize_name(n) for n in exclude}
    frontend = set(FRONTEND_ONLY)
    seen: set[str] = set()
    env = Environment()
    for dist in distributions():
        raw = dist.metadata["Name"]
        if not raw:
            continue
        name = canonicalize_name(raw)
        if name in seen:
            continue
        seen.add(name)
        env.versions[name] = dist.version
        if name in excluded:
            continue
        if name in frontend:
            env.left_behind.append(name)
            continue
        pin, why = _origin(dist)
        if pin is None:
            env.skipped.append(Skipped(name, dist.version, why or "not installable"))
        elif gpu and name in GPU_STACK and "==" in pin:
            env.pins.append(_gpu_pin(name, dist.version))
        else:
            env.pins.append(pin)
    env.pins.sort(key=str.lower)
    env.left_behind.sort()
    return env


_TOP_LEVEL = re.compile(r"^[A-Za-z_][\w]*$")


def distribution_of_module(module: str) -> tuple[str, str] | None:
    """``(distribution, version)`` installed in the kernel that provides ``module``."""
    from importlib.metadata import packages_distributions, version

    top = module.split(".", 1)[0]
    if not _TOP_LEVEL.match(top):
        return None
    names = packages_distributions().get(top)
    if not names:
        return None
    try:
        return names[0], version(names[0])
    except Exception:
        return None
