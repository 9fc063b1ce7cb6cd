"""Compute Engine's offers: machine types (and GPUs attached to N1 hosts) per zone.

Why apart: finding offers reads the zones, their machine and accelerator types and the
price catalog, and creates nothing; the provider launches from what it finds here.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from ...errors import ProvisionError
from ...model import ClusterSpec, Offer
from ..cloud import gpus_match
from .api import ComputeApi
from .catalog import ATTACHABLE, PRICES, gpu_name

__all__ = ["Attempt", "find_attempts", "find_zones", "label"]

DEFAULT_REGION = "us-central1"
_ZONE = re.compile(r"^[a-z]+-[a-z]+\d+-[a-z]$")


@dataclass(frozen=True, slots=True)
class Attempt:
    """One way to launch a node: a machine type (and attached GPUs) in one zone and market."""

    offer: Offer
    spot: bool
    price: float
    attached: str = ""  # accelerator type attached to an N1 host, if any


def label(attempt: Attempt) -> str:
    """``a2-highgpu-1g in us-central1-a (spot, $1.10/h)`` for messages."""
    market = "spot" if attempt.spot else "on-demand"
    offer = attempt.offer
    return f"{offer.instance_type} in {offer.region} ({market}, ${attempt.price:.2f}/h)"


async def find_zones(api: ComputeApi, spec: ClusterSpec) -> list[str]:
    """The zone asked for, or every zone that is up in the region asked for."""
    wanted = spec.region or os.environ.get("CLOUDSDK_COMPUTE_ZONE") or DEFAULT_REGION
    if _ZONE.match(wanted):
        return [wanted]
    pager = await api.call(api.zones.list, project=api.project)
    zones = [
        z.name
        for z in pager
        if z.region.rsplit("/", 1)[-1] == wanted and (z.status or "UP") == "UP"
    ]
    if not zones:
        raise ProvisionError(f"no Google Cloud zone is up in region {wanted}")
    return sorted(zones)


async def find_attempts(api: ComputeApi, spec: ClusterSpec, zones: list[str]) -> list[Attempt]:
    """The ways to launch a node of ``spec`` in ``zones``, cheapest first."""
    attempts: list[Attempt] = []
    for zone in zones:
        for offer, attached in await _zone_offers(api, zone):
            if not gpus_match(offer, spec):
                continue
            if spec.spot != "always":
                attempts.append(Attempt(offer, False, offer.price_per_hour, attached))
            if spec.spot != "never" and offer.spot_price_per_hour is not None:
                attempts.append(Attempt(offer, True, offer.spot_price_per_hour, attached))
    if spec.max_price is not None:
        attempts = [a for a in attempts if a.price <= spec.max_price]
    order = {zone: i for i, zone in enumerate(zones)}
    attempts.sort(key=lambda a: (a.price, order[a.offer.region], a.offer.instance_type))
    return attempts


async def _zone_offers(api: ComputeApi, zone: str) -> list[tuple[Offer, str]]:
    pager = await api.call(api.machine_types.list, project=api.project, zone=zone)
    types = {m.name: m for m in pager if m.name in PRICES}
    found: list[tuple[Offer, str]] = []
    for name, machine in types.items():
        on_demand, spot = PRICES[name]
        accelerators = list(machine.accelerators)
        offer = Offer(
            provider="gcp",
            instance_type=name,
            accelerator=gpu_name(accelerators[0].guest_accelerator_type) if accelerators else None,
            accelerator_count=sum(a.guest_accelerator_count for a in accelerators),
            vcpus=float(machine.guest_cpus),
            memory_gb=round(machine.memory_mb / 1024, 1),
            price_per_hour=on_demand,
            spot_price_per_hour=spot,
            region=zone,
        )
        found.append((offer, ""))
    if any(host in types for host, _, _ in ATTACHABLE.values()):
        hosts = {o.instance_type: o for o, _ in found}
        pager = await api.call(api.accelerator_types.list, project=api.project, zone=zone)
        for accelerator in pager:
            host, counts, prices = ATTACHABLE.get(accelerator.name, ("", (), (0.0, 0.0)))
            if host in hosts:
                found.extend(
                    (_attached(hosts[host], accelerator.name, n, prices), accelerator.name)
                    for n in counts
                )
    return found


def _attached(host: Offer, accelerator: str, count: int, prices: tuple[float, float]) -> Offer:
    """An N1 host with ``count`` GPUs of ``accelerator`` attached, priced as the sum."""
    return Offer(
        provider="gcp",
        instance_type=f"{host.instance_type}+{count}x{accelerator}",
        accelerator=gpu_name(accelerator),
        accelerator_count=count,
        vcpus=host.vcpus,
        memory_gb=host.memory_gb,
        price_per_hour=round(host.price_per_hour + count * prices[0], 4),
        spot_price_per_hour=round((host.spot_price_per_hour or 0.0) + count * prices[1], 4),
        region=host.region,
    )
