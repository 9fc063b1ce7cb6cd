"""What a ``%%skyward run`` cell can call on its instance: ``metric`` and ``node``.

The agent connects these to its outbox when it starts; in the kernel itself (no agent)
they say where they work instead of doing nothing.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["NodeInfo", "metric", "node"]

_emit: Callable[[str, float, float], None] | None = None
_node: dict[str, Any] = {}


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """Where a remote cell runs: this node and the cluster around it."""

    id: int
    count: int
    head: bool
    address: str
    addresses: tuple[str, ...]
    cluster: str


def node() -> NodeInfo:
    """This node's id, the node count, whether it is the head (node 0), and addresses.

    >>> skyward.node().head   # inside %%skyward run
    """
    if not _node:
        raise RuntimeError("skyward.node() describes the node inside %%skyward run cells only")
    addresses = tuple(_node.get("addresses", ()))
    index = int(_node["id"])
    return NodeInfo(
        id=index,
        count=int(_node["count"]),
        head=index == 0,
        address=addresses[index] if index < len(addresses) else "",
        addresses=addresses,
        cluster=str(_node.get("cluster", "")),
    )


def metric(name: str, value: float) -> None:
    """Record a metric from a remote cell: it becomes a ``Metric`` event and a chart.

    >>> skyward.metric("loss", 0.42)   # inside %%skyward run
    """
    if _emit is None:
        raise RuntimeError("skyward.metric() records from inside %%skyward run cells only")
    if not isinstance(name, str) or not name:
        raise ValueError("skyward.metric(name, value): name must be a non-empty string")
    number = float(value)
    if math.isnan(number):
        raise ValueError(f"skyward.metric({name!r}, ...): value is NaN")
    _emit(name, number, time.time())
