"""Facts the seed vocabulary has no word for, kept out of the public API.

``Display`` is a rich output (a mime bundle) of a remote cell: ``display(df)``, a
matplotlib figure. It travels on the bus like the seed's facts so the Jupyter layer can
consume it the same way, but ``skyward``'s exports stay exactly the seed page.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..events import NodeInstance

__all__ = ["Display"]


@dataclass(frozen=True, slots=True)
class Display:
    """A mime bundle a remote cell displayed, in order with its ``Log`` lines."""

    instance: NodeInstance
    task_id: str | None
    data: dict[str, Any]
    metadata: dict[str, Any] = field(default_factory=dict)
