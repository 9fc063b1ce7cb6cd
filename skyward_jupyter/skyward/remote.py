"""What a ``%%skyward run`` cell can call on its instance: ``skyward.metric``.

The agent connects these to its outbox when it starts; in the kernel itself (no agent)
they say where they work instead of doing nothing.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

__all__ = ["metric"]

_emit: Callable[[str, float, float], None] | None = None


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
