"""What a node's venv installs, pinned to the kernel's own versions.

The worker imports IPython, cloudpickle and matplotlib-inline; their whole dependency
tree (as this kernel has it installed) is pinned too, so that the node formats a cell's
output with exactly the libraries the kernel would (an older ``stack_data`` already on
the node's base interpreter renders tracebacks differently, say).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, distribution

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

__all__ = ["WORKER_PACKAGES", "pinned_closure", "worker_requirements"]

WORKER_PACKAGES = ("ipython", "cloudpickle", "matplotlib-inline")
"""What the worker imports."""


def pinned_closure(names: tuple[str, ...] | list[str]) -> list[str]:
    """``names`` and everything they require here (extras left out), each pinned to the
    version installed in this kernel, sorted by name."""
    pinned: dict[str, str] = {}
    todo = list(names)
    while todo:
        name = canonicalize_name(todo.pop())
        if name in pinned:
            continue
        try:
            found = distribution(name)
        except PackageNotFoundError:
            continue
        pinned[name] = found.version
        for line in found.requires or ():
            try:
                requirement = Requirement(line)
            except InvalidRequirement:
                continue
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    return [f"{name}=={version}" for name, version in sorted(pinned.items())]


def worker_requirements() -> list[str]:
    """The worker's packages and their dependencies, at the kernel's versions."""
    return pinned_closure(WORKER_PACKAGES)
