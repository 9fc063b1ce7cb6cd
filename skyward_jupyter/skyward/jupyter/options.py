"""The ``%skyward`` command line: what its parsers (``parsers.py``) give, as a ClusterSpec.

Pure functions with no I/O, so every user mistake is tested without a kernel. Mistakes
raise IPython's ``UsageError``, which the kernel shows as one line, with no traceback.
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys

from IPython.core.error import UsageError

from ..model import ClusterSpec
from ..secrets import read_env_file
from .parsers import COMMANDS, PARSERS, PROVIDERS, HelpShown

__all__ = [
    "PARSERS",
    "PROVIDERS",
    "env_values",
    "help_text",
    "offers_spec",
    "parse_command",
    "parse_gpus",
    "parse_names",
    "parse_size",
    "parse_targets",
    "spec_from",
]


def help_text() -> str:
    """Every command's usage, for ``%skyward`` with no arguments and ``%skyward?``."""
    return "\n\n".join(p.format_help() for p in PARSERS.values())


def parse_command(line: str) -> tuple[str, argparse.Namespace] | None:
    """Split a ``%skyward`` line into its command and options; None after ``--help``."""
    try:
        words = shlex.split(line)
    except ValueError as exc:
        raise UsageError(f"%skyward: cannot parse the arguments ({exc})") from exc
    if not words or words[0] in ("-h", "--help", "help"):
        print(help_text())
        return None
    command, rest = words[0], words[1:]
    if command not in PARSERS:
        raise UsageError(f"%skyward: unknown command {command!r}; use one of {', '.join(COMMANDS)}")
    try:
        return command, PARSERS[command].parse_args(rest)
    except HelpShown:
        print(PARSERS[command].format_help())
        return None


GPU_SPEC = re.compile(r"^(?:(?P<type>[A-Za-z][\w.\-]*)(?::(?P<count>\d+))?|(?P<only>\d+))$")


def parse_gpus(text: str | None) -> tuple[str | None, int]:
    """``'A100:4'`` → ('A100', 4); ``'4'`` → (None, 4); ``'A100'`` → ('A100', 1)."""
    if text is None:
        return None, 0
    match = GPU_SPEC.match(text.strip())
    if not match:
        raise UsageError(
            f"--gpus {text!r} is malformed: use a count ('4') or TYPE:COUNT ('A100:4')"
        )
    if match["only"] is not None:
        count = int(match["only"])
        kind = None
    else:
        kind = match["type"]
        count = int(match["count"]) if match["count"] is not None else 1
    if count < 1:
        raise UsageError(f"--gpus {text!r}: the count must be at least 1")
    return kind, count


def parse_targets(text: str) -> list[int] | None:
    """``'all'`` → None; ``'head'`` → [0]; ``'0'`` → [0]; ``'0,2'`` → [0, 2]."""
    text = text.strip()
    if text == "all":
        return None
    if text == "head":
        return [0]
    try:
        targets = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        targets = []
    if not targets or any(t < 0 for t in targets):
        raise UsageError(f"--on {text!r}: use 'all', 'head', a node id ('0') or a list ('0,2')")
    return targets


def env_values(args: argparse.Namespace) -> dict[str, str]:
    """The ``--env`` and ``--env-file`` values (secrets: they go to the nodes only)."""
    values: dict[str, str] = {}
    for path in args.env_file:
        try:
            values.update(read_env_file(path))
        except (OSError, ValueError) as exc:
            raise UsageError(f"--env-file {path}: {exc}") from None
    for item in args.env:
        key, sep, value = item.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise UsageError("--env: use KEY=VALUE (got a value without a valid KEY=)")
        values[key] = value
    return values


def parse_names(option: str, text: str) -> list[str]:
    """``'a,b'`` → ['a', 'b'], each a valid identifier."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    bad = [name for name in names if not name.isidentifier()]
    if bad:
        raise UsageError(f"{option} {text!r}: {', '.join(bad)} is not a variable name")
    return names


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMG]?B?)\s*$", re.IGNORECASE)
_UNITS = {"": 1, "B": 1, "K": 10**3, "KB": 10**3, "M": 10**6, "MB": 10**6, "G": 10**9, "GB": 10**9}


def parse_size(option: str, text: str) -> int:
    """``'10MB'`` → 10_000_000 (characters of output); ``'500KB'``, ``'1G'``, ``'2000'``."""
    match = _SIZE.match(text)
    unit = match[2].upper() if match else ""
    if not match or unit not in _UNITS:
        raise UsageError(f"{option} {text!r}: use a size such as 500KB, 10MB or 1GB")
    size = int(float(match[1]) * _UNITS[unit])
    if size <= 0:
        raise UsageError(f"{option} {text!r}: the size must be positive")
    return size


def available_providers() -> tuple[str, ...]:
    """The providers this version implements (a provider module registers itself)."""
    from ..session import Session

    implemented = Session.provider_names()
    return tuple(name for name in PROVIDERS if name in implemented)


def spec_from(args: argparse.Namespace) -> ClusterSpec:
    """Check ``%skyward up`` options and build the cluster spec.

    Without ``--provider`` the spec's provider is ``""``: ``up`` picks the cheapest
    configured one (``skyward.providers.offers.choose_offer``).
    """
    provider = args.provider
    if provider is None and args.runtime != "process":
        provider = "container"
    if provider is not None:
        _check_provider(provider)
    if args.nodes < 1:
        raise UsageError(f"--nodes {args.nodes}: a cluster needs at least 1 node")
    accelerator, count = parse_gpus(args.gpus)
    python = "{}.{}".format(*sys.version_info[:2])
    env = env_values(args)
    if args.max_price is not None and args.max_price <= 0:
        raise UsageError("--max-price must be a positive number of USD per hour")
    if args.timeout <= 0:
        raise UsageError("--timeout must be a positive number of seconds")
    for name in ("grace", "idle_timeout", "ttl", "max_cost"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise UsageError(f"--{name.replace('_', '-')} must be a positive number")
    if args.runtime != "process" and provider != "container":
        raise UsageError("--runtime applies to the container provider only")
    return ClusterSpec(
        provider=provider or "",
        nodes=args.nodes,
        accelerator=accelerator,
        accelerator_count=count,
        python=python,
        pip=tuple(args.pip),
        env=tuple(env),
        spot=args.spot or "auto",
        region=args.region,
        max_price=args.max_price,
        runtime=args.runtime,
        name=args.name,
        launch_timeout=args.timeout,
        bootstrap_timeout=args.timeout,
        keep=args.keep,
        grace=args.grace,
        idle_timeout=args.idle_timeout,
        ttl=args.ttl,
        max_cost=args.max_cost,
        replace=not args.no_replace,
        sync_packages=not args.no_sync_packages,
        interpreter=args.python,
        sync_dirs=tuple(args.sync),
    )


# -- offers --
def _check_provider(name: str) -> None:
    if name not in PROVIDERS:
        raise UsageError(f"--provider {name!r} is unknown: use one of {', '.join(PROVIDERS)}")
    available = available_providers()
    if name not in available:
        raise UsageError(
            f"--provider {name}: not available in this version yet "
            f"(available: {', '.join(available)})"
        )


def offers_spec(args: argparse.Namespace) -> ClusterSpec:
    """Check ``%skyward offers`` options; the spec to match offers against."""
    if args.provider is not None:
        _check_provider(args.provider)
    accelerator, count = parse_gpus(args.gpus)
    if args.max_price is not None and args.max_price <= 0:
        raise UsageError("--max-price must be a positive number of USD per hour")
    return ClusterSpec(
        provider=args.provider or "",
        accelerator=accelerator,
        accelerator_count=count,
        spot=args.spot or "auto",
        region=args.region,
        max_price=args.max_price,
    )


# -- end offers --
