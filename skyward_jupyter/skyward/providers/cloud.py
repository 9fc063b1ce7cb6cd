"""What the HTTP cloud providers share: offer matching, capacity fallback, polling.

Why here: RunPod, Vast.ai and Verda differ in their APIs, not in what "A100:2, spot, under
$3/h, cheapest first" means, nor in how to fall back to the next offer when one has no
capacity, nor in how to poll under a deadline. Each provider keeps its own API quirks.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlparse

from ..errors import CapacityError, ProvisionError
from ..model import ClusterSpec, Offer

__all__ = [
    "Candidate",
    "accelerator_matches",
    "caller_cidr",
    "describe_machine",
    "describe_request",
    "effective_price",
    "gpus_match",
    "host_key_installed",
    "launch_in_order",
    "launch_with_fallback",
    "poll_until",
    "rank",
    "wanted_gpus",
]

log = logging.getLogger("skyward.providers")

T = TypeVar("T")
A = TypeVar("A")


@dataclass(frozen=True)
class Candidate:
    """One way to launch a node: an offer, spot or not, and the provider's own details."""

    offer: Offer
    spot: bool
    data: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def price(self) -> float:
        if self.spot and self.offer.spot_price_per_hour is not None:
            return self.offer.spot_price_per_hour
        return self.offer.price_per_hour

    def label(self) -> str:
        kind = "spot" if self.spot else "on-demand"
        where = f" in {self.offer.region}" if self.offer.region else ""
        return f"{self.offer.instance_type} ({kind}{where}, ${self.price:.2f}/h)"


def _tokens(text: str) -> list[str]:
    return re.findall(r"[a-z]+|\d+", text.lower())


def accelerator_matches(wanted: str | None, name: str | None) -> bool:
    """Whether the accelerator ``name`` is of the ``wanted`` type (None: any).

    Matches whole name parts in order, so ``A100`` matches ``NVIDIA A100 80GB PCIe`` and
    ``A100 SXM4`` but not ``A1000``; ``RTX4090`` matches ``GeForce RTX 4090``.
    """
    if wanted is None:
        return True
    if not name:
        return False
    want, have = _tokens(wanted), _tokens(name)
    if not want:
        return False
    return any(have[i : i + len(want)] == want for i in range(len(have) - len(want) + 1))


def wanted_gpus(spec: ClusterSpec, default: int = 1) -> int:
    """GPUs per node: the asked count, or ``default`` for providers that sell only GPUs."""
    return spec.accelerator_count or default


def effective_price(offer: Offer, spot: str) -> float | None:
    """The price per hour ``offer`` is listed at under a spot policy (None: not sold so)."""
    if spot == "always":
        return offer.spot_price_per_hour
    if spot == "never":
        return offer.price_per_hour
    prices = [p for p in (offer.price_per_hour, offer.spot_price_per_hour) if p is not None]
    return min(prices) if prices else None


def rank(candidates: Sequence[Candidate], spec: ClusterSpec) -> list[Candidate]:
    """Candidates allowed by the spot policy and price cap, cheapest first."""
    kept = []
    for c in candidates:
        if spec.spot == "always" and not c.spot:
            continue
        if spec.spot == "never" and c.spot:
            continue
        if spec.max_price is not None and c.price > spec.max_price:
            continue
        if spec.region and spec.region.lower() not in c.offer.region.lower():
            continue
        kept.append(c)
    return sorted(kept, key=lambda c: (c.price, not c.spot, c.offer.instance_type))


def gpus_match(offer: Offer, spec: ClusterSpec) -> bool:
    """Whether a machine type has the GPUs ``spec`` asks for: none for a CPU machine,
    else at least that many of the type named (``A100`` also takes ``A100-80GB``)."""
    if spec.accelerator_count == 0:
        return offer.accelerator_count == 0
    if offer.accelerator_count < spec.accelerator_count:
        return False
    wanted = (spec.accelerator or "").upper()
    have = (offer.accelerator or "").upper()
    return not wanted or have == wanted or have.startswith(wanted + "-")


def describe_machine(spec: ClusterSpec) -> str:
    """``A100 x8 (spot) under $30.00/h`` (``a CPU machine`` when no GPU is asked for)."""
    gpus = f"{spec.accelerator or 'any GPU'} x{spec.accelerator_count}"
    what = gpus if spec.accelerator_count else "a CPU machine"
    market = {"always": " (spot)", "never": " (on-demand)"}.get(spec.spot, "")
    cap = f" under ${spec.max_price:.2f}/h" if spec.max_price else ""
    return what + market + cap


def describe_request(spec: ClusterSpec) -> str:
    """``A100:2 spot in FIN-01 under $3.00/h`` for messages."""
    gpus = f"{spec.accelerator or 'any GPU'}:{spec.accelerator_count or 1}"
    if not spec.accelerator and not spec.accelerator_count:
        gpus = "any machine"
    parts = [gpus]
    if spec.spot != "auto":
        parts.append("spot" if spec.spot == "always" else "on-demand")
    if spec.region:
        parts.append(f"in {spec.region}")
    if spec.max_price is not None:
        parts.append(f"under ${spec.max_price:.2f}/h")
    return " ".join(parts)


async def launch_with_fallback(
    provider: str,
    candidates: Sequence[Candidate],
    start: int,
    attempt: Callable[[Candidate], Awaitable[T]],
    note: Callable[[str], None] | None = None,
) -> tuple[T, int]:
    """Launch with the first candidate (from ``start``) that has capacity.

    A :class:`CapacityError` moves on to the next candidate and says so (``note``, or a
    warning on the ``skyward.providers`` logger, which a notebook shows in the cell);
    any other error stops. Returns the launch's result and the index that worked.
    """
    tried: list[str] = []
    order = list(range(start, len(candidates))) + list(range(start))
    for position, index in enumerate(order):
        candidate = candidates[index]
        try:
            return await attempt(candidate), index
        except CapacityError as exc:
            tried.append(f"{candidate.label()}: {exc}")
            if position + 1 < len(order):
                following = candidates[order[position + 1]]
                message = (
                    f"{provider}: no capacity for {candidate.label()}; trying {following.label()}"
                )
                (note or log.warning)(message)
    raise CapacityError(
        f"{provider}: no capacity in any of {len(tried)} offer(s): " + "; ".join(tried)
    )


async def launch_in_order(
    what: str,
    attempts: Sequence[A],
    label: Callable[[A], str],
    launch: Callable[[int, A], Awaitable[T]],
    exhausted: str,
) -> T:
    """``launch(index, attempt)`` with each attempt in its order until one has capacity
    (the index makes a launch's idempotency token); AWS's and Google Cloud's way.

    Each :class:`CapacityError` is a warning that names ``what`` (``aws node 2``), the
    attempt, the cloud's words and the attempt tried next; a launch that worked after a
    fallback says which attempt it was. When none had capacity, the error is
    ``exhausted`` and the attempts tried. Any other error stops at once.
    """
    tried: list[str] = []
    for index, attempt in enumerate(attempts):
        this = label(attempt)
        try:
            result = await launch(index, attempt)
        except CapacityError as exc:
            tried.append(this)
            following = attempts[index + 1 : index + 2]
            then = f"trying {label(following[0])}" if following else "no other offer left"
            log.warning("skyward: %s: %s: %s; %s", what, this, str(exc).rstrip("."), then)
            continue
        if tried:
            log.warning("skyward: %s launched as %s", what, this)
        return result
    raise CapacityError(f"{exhausted}: tried {', '.join(tried)}")


async def host_key_installed(ip: str, port: int, expected: str) -> bool:
    """Whether the SSH server at ``ip:port`` presents the host key ``expected`` (a public
    line). Where a boot script installs the key after the image's own sshd started, a
    node is reported running only once this is true: the pinned check then never meets
    the image's key, and nothing is ever trusted on first use."""
    import asyncssh

    try:
        key = await asyncio.wait_for(asyncssh.get_server_host_key(ip, port), 10.0)
    except (OSError, asyncssh.Error, TimeoutError):
        return False
    if key is None:
        return False
    want = asyncssh.import_public_key(expected)
    return bool(key.public_data == want.public_data)


async def poll_until(
    check: Callable[[], Awaitable[T | None]],
    timeout: float,
    what: str,
    first: float = 0.2,
    cap: float = 5.0,
    last_seen: Callable[[], str] | None = None,
) -> T:
    """Call ``check`` with growing pauses until it returns non-None, or raise at ``timeout``
    (saying what ``last_seen`` says of the last check, where given: a state)."""
    deadline = time.monotonic() + timeout
    pause = first
    while True:
        found = await check()
        if found is not None:
            return found
        left = deadline - time.monotonic()
        if left <= 0:
            seen = f" ({last_seen()})" if last_seen is not None else ""
            raise ProvisionError(f"{what}: not done within {timeout:.0f} s{seen}")
        await asyncio.sleep(min(pause, left))
        pause = min(cap, pause * 1.6)


def caller_cidr(endpoint: str | None) -> str:
    """The address the API sees us coming from, as a /32 (what SSH is opened to).

    Against the real cloud that is our public address (AWS's checkip service); against an
    endpoint override it is our side of a connection to that endpoint.
    """
    if endpoint:
        url = urlparse(endpoint)
        port = url.port or (443 if url.scheme == "https" else 80)
        with socket.create_connection((url.hostname or "127.0.0.1", port), timeout=10) as sock:
            return f"{sock.getsockname()[0]}/32"
    import httpx

    override = os.environ.get("SKYWARD_SSH_CIDR")
    if override:
        return override
    try:
        address = httpx.get("https://checkip.amazonaws.com", timeout=10).text.strip()
        socket.inet_aton(address)
    except (httpx.HTTPError, OSError) as exc:
        raise ProvisionError(
            f"cannot find this machine's public address to open SSH to ({exc}); "
            "set SKYWARD_SSH_CIDR (e.g. 203.0.113.7/32)"
        ) from exc
    return f"{address}/32"
