"""Offers across providers: ``%skyward offers``, and ``%skyward up`` with no provider.

Why here: comparing clouds is the one thing that needs every provider at once. A provider
takes part when it constructs without error (its credentials are set); one that does not
is skipped with its own one-line reason, so the user sees what to set.

The ``container`` provider (this machine, free) takes part only when no GPU is asked for:
it has none. ``up`` without ``--provider`` then prefers any configured cloud's cheapest
offer and falls back to ``container`` only when no cloud is configured (see
:func:`choose_offer`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import replace

from ..errors import ProvisionError, SkywardError
from ..model import ClusterSpec, Offer
from .cloud import describe_request, effective_price

__all__ = ["choose_offer", "format_offers", "gather_offers"]

OFFERS_TIMEOUT = 60.0
LOCAL = "container"


async def _offers_of(name: str, spec: ClusterSpec) -> list[Offer]:
    from . import provider_for

    spec = replace(spec, provider=name)
    return list(await provider_for(name, spec).offers(spec))


async def gather_offers(
    spec: ClusterSpec, names: Iterable[str] | None = None
) -> tuple[list[tuple[str, Offer]], dict[str, str]]:
    """Matching offers of every configured provider (or of ``names``), cheapest first,
    and the providers skipped with the reason (no credentials, an API error, no GPU)."""
    from . import PROVIDERS

    wanted = list(names) if names is not None else list(PROVIDERS)
    skipped: dict[str, str] = {}
    asked_gpus = bool(spec.accelerator or spec.accelerator_count)
    runnable = []
    for name in wanted:
        if name == LOCAL and asked_gpus:
            skipped[name] = "this machine offers no GPUs"
            continue
        runnable.append(name)

    async def one(name: str) -> list[Offer]:
        return await asyncio.wait_for(_offers_of(name, spec), OFFERS_TIMEOUT)

    results = await asyncio.gather(*(one(n) for n in runnable), return_exceptions=True)
    rows: list[tuple[str, Offer]] = []
    for name, result in zip(runnable, results, strict=True):
        if isinstance(result, BaseException):
            if isinstance(result, asyncio.CancelledError):
                raise result
            skipped[name] = _reason(result)
            continue
        if not result:
            skipped[name] = f"no offer matches {describe_request(spec)}"
        rows.extend((name, offer) for offer in result)
    rows.sort(key=lambda row: (_price(row[1], spec), row[0], row[1].instance_type))
    return rows, skipped


def _price(offer: Offer, spec: ClusterSpec) -> float:
    price = effective_price(offer, spec.spot)
    return float("inf") if price is None else price


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return f"no answer within {OFFERS_TIMEOUT:.0f} s"
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if isinstance(exc, ImportError):
        return f"not installed ({text})"
    return text if isinstance(exc, SkywardError) else f"{type(exc).__name__}: {text}"


def choose_offer(
    rows: list[tuple[str, Offer]], skipped: dict[str, str], spec: ClusterSpec
) -> tuple[str, Offer]:
    """The offer ``up`` without ``--provider`` launches: the cheapest cloud offer; the
    local ``container`` only when no cloud is configured (and no GPU asked for)."""
    clouds = [row for row in rows if row[0] != LOCAL]
    if clouds:
        return clouds[0]
    local = [row for row in rows if row[0] == LOCAL]
    if local:
        return local[0]
    why = "; ".join(f"{name}: {reason}" for name, reason in sorted(skipped.items()))
    raise ProvisionError(
        f"no configured provider offers {describe_request(spec)} ({why or 'none configured'})"
    )


def _money(value: float | None) -> str:
    return "-" if value is None else f"${value:.2f}"


def format_offers(
    rows: list[tuple[str, Offer]], skipped: dict[str, str] | None = None, limit: int = 30
) -> str:
    """The offers as a text table (cheapest first) with the skipped providers below."""
    header = ("provider", "instance type", "accelerator", "vCPUs", "memory", "on-demand/h",
              "spot/h", "region")  # fmt: skip
    table = [header]
    for name, offer in rows[:limit]:
        gpus = f"{offer.accelerator} x{offer.accelerator_count}" if offer.accelerator else "-"
        table.append((
            name, offer.instance_type, gpus, f"{offer.vcpus:g}", f"{offer.memory_gb:g} GB",
            _money(offer.price_per_hour), _money(offer.spot_price_per_hour), offer.region or "-",
        ))  # fmt: skip
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
             for row in table]  # fmt: skip
    if not rows:
        lines = ["no matching offers"]
    elif len(rows) > limit:
        lines.append(f"… {len(rows) - limit} more")
    for name, reason in sorted((skipped or {}).items()):
        lines.append(f"skipped {name}: {reason}")
    return "\n".join(lines)
