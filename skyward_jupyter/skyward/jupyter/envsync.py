"""Package sync as the notebook sees it: one line in the ``up`` cell, and errors that
say what to do.

The ``up`` cell names, once, what the nodes did not get and why. A
``ModuleNotFoundError`` on a node for a module the kernel has gets one more line: the
distribution and version here, why package sync left it out (if it did), and what to type.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from packaging.utils import canonicalize_name

from ..protocol import ErrorInfo
from ..session import distribution_of_module

__all__ = ["annotate", "hint", "report_up", "summary"]

_state: dict[str, Any] = {"skipped": {}, "synced": True}

_MISSING = re.compile(r"No module named '([\w.]+)'")


def hint(evalue: str, skipped: dict[str, str], synced: bool) -> str | None:
    """What to do about ``No module named 'x'``, or None when the kernel lacks it too."""
    match = _MISSING.search(evalue)
    if match is None:
        return None
    found = distribution_of_module(match[1])
    if found is None:
        return None
    name, version = found
    fix = f"%skyward up --pip {name}=={version}"
    why = skipped.get(canonicalize_name(name))
    if why:
        return f"the kernel has {name} {version}; package sync skipped it ({why}): {fix}"
    if not synced:
        return f"the kernel has {name} {version}; package sync was off (--no-sync-packages): {fix}"
    return f"the kernel has {name} {version}, not this node: {fix}"


def summary(reports: list[Any], left_behind: list[str]) -> str:
    """One line for the ``up`` cell: what sync installed, skipped (and why), left behind."""
    nodes = len(reports)
    installed = min((r.installed for r in reports), default=0)
    seconds = max((r.seconds for r in reports), default=0.0)
    skipped: dict[str, str] = {}
    for report in reports:
        for pin, why in report.skipped:
            skipped.setdefault(pin, why)
    text = (
        f"package sync: {installed} package(s) as in the kernel on {nodes} node(s) "
        f"in {seconds:.1f} s"
    )
    if any(r.offline for r in reports):
        text += " (from uv's cache: the index failed)"
    if skipped:
        text += f"; skipped {len(skipped)}: " + ", ".join(
            f"{pin} ({why})" for pin, why in skipped.items()
        )
    if left_behind:
        text += f"; left behind (frontend only): {', '.join(left_behind)}"
    return text


def report_up(spec: Any, reports: list[Any], left_behind: list[str]) -> None:
    """After ``up``: print the sync's line; remember what was skipped for the hints."""
    _state["synced"] = spec.sync_packages
    if not spec.sync_packages:
        _state["skipped"] = {}
        return
    if not reports:
        return
    skipped = {}
    for report in reports:
        for pin, why in report.skipped:
            name = re.split(r"[=<>@ ;\[]", pin, maxsplit=1)[0]
            skipped.setdefault(canonicalize_name(name), why)
    _state["skipped"] = skipped
    print(summary(reports, left_behind))


def annotate(
    errors: list[tuple[int, ErrorInfo]],
    skipped: dict[str, str] | None = None,
    synced: bool | None = None,
) -> list[tuple[int, ErrorInfo]]:
    """``errors`` with a hint line under each ``ModuleNotFoundError`` the kernel can help."""
    skipped = _state["skipped"] if skipped is None else skipped
    synced = _state["synced"] if synced is None else synced
    out = []
    for node, error in errors:
        text = hint(error.evalue, skipped, synced) if error.ename == "ModuleNotFoundError" else None
        if text:
            error = dataclasses.replace(
                error, traceback=[*error.traceback, f"\x1b[33mskyward: {text}\x1b[0m"]
            )
        out.append((node, error))
    return out
