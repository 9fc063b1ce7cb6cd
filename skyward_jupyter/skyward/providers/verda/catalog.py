"""What Verda's answers mean: its instance statuses, its GPU names, its offers.

Why apart: these read Verda's JSON and call nothing, so they are plain functions the
provider feeds with what ``/instance-types`` and ``/instance-availability`` answered.
"""

from __future__ import annotations

import re
from typing import Any

from ...core.provider import InstanceState
from ...model import ClusterSpec, Offer
from ..cloud import Candidate, accelerator_matches, rank

__all__ = ["GONE_STATES", "STATES", "candidates", "gpu_names"]

GONE_STATES = {"deleted", "notfound"}
STATES: dict[str, InstanceState] = {
    "new": InstanceState.PENDING,
    "ordered": InstanceState.PENDING,
    "provisioning": InstanceState.PENDING,
    "validating": InstanceState.PENDING,
    "pending": InstanceState.PENDING,
    "restoring": InstanceState.PENDING,
    "unknown": InstanceState.PENDING,
    "running": InstanceState.RUNNING,
    "offline": InstanceState.STOPPED,
    "starting_hibernation": InstanceState.STOPPED,
    "hibernating": InstanceState.STOPPED,
    "error": InstanceState.STOPPED,
    "no_capacity": InstanceState.STOPPED,
    "discontinued": InstanceState.TERMINATED,
    "deleting": InstanceState.TERMINATED,
    "deleted": InstanceState.TERMINATED,
    "notfound": InstanceState.TERMINATED,
}
"""Verda's instance statuses -> ours (a spot VM that is discontinued or gone: preempted)."""


def gpu_names(kind: dict[str, Any]) -> list[str]:
    """Every name Verda gives the type's GPU, most descriptive first (empty: no GPU):
    ``name`` (``'A100 SXM4 80GB'``), ``model`` (``'A100'``), ``display_name``, then the
    description without its count (``'8x H100'`` → ``'H100'``)."""
    gpu = kind.get("gpu") or {}
    if not gpu.get("number_of_gpus"):
        return []
    described = re.sub(r"^\s*\d+\s*x\s*", "", str(gpu.get("description") or "")).strip()
    found = [str(kind.get(key) or "").strip() for key in ("name", "model", "display_name")]
    return [name for name in [*found, described] if name]


def candidates(
    kinds: list[dict[str, Any]], where: dict[bool, dict[str, list[str]]], spec: ClusterSpec
) -> list[Candidate]:
    """A candidate per instance type matching ``spec``, market (``where``'s keys: spot
    or not) and location that has it now, cheapest first."""
    found: list[Candidate] = []
    for kind in kinds:
        names = gpu_names(kind)
        count = int((kind.get("gpu") or {}).get("number_of_gpus") or 0)
        if spec.accelerator_count and count != spec.accelerator_count:
            continue
        if spec.accelerator and not any(accelerator_matches(spec.accelerator, n) for n in names):
            continue
        name = str(kind["instance_type"])
        spot_price = kind.get("spot_price")
        for spot, per_type in where.items():
            if spot and spot_price in (None, "", 0):
                continue
            for location in per_type.get(name, []):
                offer = Offer(
                    provider="verda",
                    instance_type=name,
                    accelerator=names[0] if names else None,
                    accelerator_count=count,
                    vcpus=float((kind.get("cpu") or {}).get("number_of_cores") or 0),
                    memory_gb=float((kind.get("memory") or {}).get("size_in_gigabytes") or 0),
                    price_per_hour=float(kind.get("price_per_hour") or 0),
                    spot_price_per_hour=None if spot_price is None else float(spot_price),
                    region=location,
                )
                found.append(Candidate(offer, spot, {"location": location}))
    return rank(found, spec)
