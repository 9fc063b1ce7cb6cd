"""EC2's offers: the instance types a region has with the GPUs asked for, and their prices.

Why apart: finding offers reads the catalog, the region's instance types and its spot
price history, and creates nothing; the provider launches from what it finds here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

from ...model import ClusterSpec, Offer
from ..cloud import gpus_match
from .api import Ec2Api
from .catalog import ON_DEMAND_USD

__all__ = ["Attempt", "adopted", "find_attempts", "label"]


@dataclass(frozen=True, slots=True)
class Attempt:
    """One way to launch a node: an offer in one market, at its price."""

    offer: Offer
    spot: bool
    price: float


def label(attempt: Attempt) -> str:
    """``p4d.24xlarge (spot, $9.83/h)`` for messages."""
    market = "spot" if attempt.spot else "on-demand"
    return f"{attempt.offer.instance_type} ({market}, ${attempt.price:.2f}/h)"


async def find_attempts(api: Ec2Api, region: str, spec: ClusterSpec) -> list[Attempt]:
    """The ways to launch a node of ``spec`` in ``region``, cheapest first."""
    offered = await api.call(
        region,
        "describe_instance_type_offerings",
        LocationType="region",
        Filters=[{"Name": "instance-type", "Values": sorted(ON_DEMAND_USD)}],
    )
    names = sorted({o["InstanceType"] for o in offered.get("InstanceTypeOfferings", [])})
    if not names:
        return []
    described = await api.call(region, "describe_instance_types", InstanceTypes=names)
    offers = [
        offer
        for info in described.get("InstanceTypes", [])
        if (offer := _offer(info, region)) is not None and gpus_match(offer, spec)
    ]
    spot_prices: dict[str, float] = {}
    if offers and spec.spot != "never":
        history = await api.call(
            region,
            "describe_spot_price_history",
            InstanceTypes=[o.instance_type for o in offers],
            ProductDescriptions=["Linux/UNIX"],
            StartTime=time.time(),
        )
        for item in history.get("SpotPriceHistory", []):
            kind, price = item["InstanceType"], float(item["SpotPrice"])
            spot_prices[kind] = min(price, spot_prices.get(kind, price))
    attempts = []
    for offer in offers:
        spot = spot_prices.get(offer.instance_type)
        offer = replace(offer, spot_price_per_hour=spot)
        if spec.spot != "always":
            attempts.append(Attempt(offer, False, offer.price_per_hour))
        if spec.spot != "never" and spot is not None:
            attempts.append(Attempt(offer, True, spot))
    if spec.max_price is not None:
        attempts = [a for a in attempts if a.price <= spec.max_price]
    attempts.sort(key=lambda a: (a.price, a.offer.instance_type))
    return attempts


def adopted(attempts: list[Attempt], described: dict[str, Any], region: str) -> Attempt:
    """What an instance found running (launched by an earlier try) was launched as."""
    spot = described.get("InstanceLifecycle") == "spot"
    for attempt in attempts:
        if attempt.offer.instance_type == described.get("InstanceType") and attempt.spot == spot:
            return attempt
    kind = described.get("InstanceType", "")
    offer = Offer("aws", kind, price_per_hour=ON_DEMAND_USD.get(kind, 0.0), region=region)
    return Attempt(offer, spot, offer.price_per_hour)


def _offer(info: dict[str, Any], region: str) -> Offer | None:
    kind = info["InstanceType"]
    price = ON_DEMAND_USD.get(kind)
    if price is None:
        return None
    gpus = info.get("GpuInfo", {}).get("Gpus", [])
    return Offer(
        provider="aws",
        instance_type=kind,
        accelerator=gpus[0]["Name"] if gpus else None,
        accelerator_count=sum(int(g.get("Count", 0)) for g in gpus),
        vcpus=float(info.get("VCpuInfo", {}).get("DefaultVCpus", 0)),
        memory_gb=round(info.get("MemoryInfo", {}).get("SizeInMiB", 0) / 1024, 1),
        price_per_hour=price,
        region=region,
    )
