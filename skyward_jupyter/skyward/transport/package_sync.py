"""Make a node's venv match the kernel's pins: ``uv pip install --no-deps`` with retries.

Why ``--no-deps`` of exact pins, in one command: the kernel's environment is already a
resolved set, so uv has nothing to resolve; it only looks up ~160 exact files (a warm
cache answers from disk). One command lets uv download and install in parallel; grouping
would pay uv's start-up and index look-ups per group. When one pin cannot exist on the
node (no build for its platform, not on its index), uv refuses the whole command up front
and names that pin: it is dropped and the command run again (each retry costs one
look-up, ~0.1-0.3 s, nothing is installed twice). When the index itself fails (a 5xx, no
connection), the install is retried once from uv's cache alone (``--offline``): what was
installed before on this machine's nodes still arrives. Nothing here fails a bootstrap.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

__all__ = ["NETWORK_ERROR", "SyncReport", "UV_OPTIONS", "install_pins"]

MAX_ROUNDS = 40

UV_OPTIONS = (
    '$(for f in ${PIP_FIND_LINKS:-}; do printf -- "--find-links %s " "$f"; done)'
    '$(for u in ${PIP_EXTRA_INDEX_URL:-}; do printf -- "--extra-index-url %s " "$u"; done)'
    '${PIP_INDEX_URL:+$([ -z "${UV_INDEX_URL:-}${UV_DEFAULT_INDEX:-}" ] && '
    'printf -- "--index-url %s " "$PIP_INDEX_URL")}'
)
"""uv reads none of pip's settings: the node's ``PIP_FIND_LINKS``, ``PIP_INDEX_URL`` and
``PIP_EXTRA_INDEX_URL`` are passed on as uv options (``UV_*`` variables win)."""

NETWORK_ERROR = re.compile(
    r"Failed to fetch|error sending request|HTTP status (?:server|client) error|"
    r"Could not connect|dns error|Request failed after|connection refused",
    re.IGNORECASE,
)

Runner = Callable[[str, str, bytes | None], Awaitable[str]]
"""Runs ``(command, shown, stdin)`` on the node; returns stdout, raises with ``output``."""


@dataclass
class SyncReport:
    """How a node's package sync went."""

    wanted: int = 0
    installed: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    offline: bool = False
    seconds: float = 0.0
    error: str = ""


def _name(pin: str) -> str:
    try:
        return canonicalize_name(Requirement(pin).name)
    except InvalidRequirement:
        return canonicalize_name(re.split(r"[=<>@ ;\[]", pin, maxsplit=1)[0])


def _blamed(text: str, pins: list[str]) -> tuple[str, str] | None:
    """The pin uv's error names first (the earliest line, then the earliest place), with
    why, in words."""
    patterns = []
    for pin in pins:
        spelled = "[-_.]".join(re.escape(part) for part in _name(pin).split("-"))
        patterns.append((pin, re.compile(rf"(?<![\w.-]){spelled}(?![\w-])", re.IGNORECASE)))
    for line in text.splitlines():
        found = [(m.start(), pin) for pin, p in patterns if (m := p.search(line))]
        if found:
            return min(found)[1], _reason(line)
    return None


def _reason(line: str) -> str:
    low = line.lower()
    if "platform" in low or "wheels with a matching" in low or "compatible with" in low:
        return "no build for the node's platform"
    if "not found in the cache" in low:
        return "not in uv's cache, and the index failed"
    if "not found in the package registry" in low or "no version of" in low:
        return "not on the node's package index"
    return line.strip().removeprefix("cause:").strip()[:160]


async def install_pins(
    run: Runner, uv: str, pins: list[str], torch_backend: str = ""
) -> SyncReport:
    """Install ``pins`` into ``~/.skyward/venv`` with no dependency resolution."""
    report = SyncReport(wanted=len(pins))
    start = time.monotonic()
    left = list(pins)
    offline = False
    backend = f"--torch-backend {torch_backend} " if torch_backend else ""
    for _ in range(MAX_ROUNDS):
        if not left:
            break
        mode = "--offline " if offline else ""
        command = (
            "cd ~ && cat > .skyward/sync-requirements.txt && "
            f"{uv} pip install --python .skyward/venv/bin/python --no-deps {mode}{backend}"
            f"{UV_OPTIONS} -r .skyward/sync-requirements.txt"
        )
        shown = (
            f"uv pip install --no-deps {mode}{backend}-r <{len(left)} pins of the kernel's "
            "packages>"
        )
        try:
            await run(command, shown, ("\n".join(left) + "\n").encode())
        except Exception as exc:
            output = str(getattr(exc, "output", "")) or str(exc)
            if not offline and NETWORK_ERROR.search(output):
                offline = report.offline = True
                continue
            blamed = _blamed(output, left)
            if blamed is None:
                lines = [ln for ln in output.splitlines() if ln.strip()]
                report.error = lines[-1].strip() if lines else str(exc)
                report.skipped.extend((pin, report.error) for pin in left)
                left = []
                break
            left.remove(blamed[0])
            report.skipped.append(blamed)
            continue
        report.installed = len(left)
        left = []
        break
    else:
        report.error = f"gave up after {MAX_ROUNDS} attempts"
        report.skipped.extend((pin, report.error) for pin in left)
    report.seconds = time.monotonic() - start
    return report
