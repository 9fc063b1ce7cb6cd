"""Facts the seed vocabulary has no word for, kept out of the public API.

``Display`` is a rich output (a mime bundle) of a remote cell: ``display(df)``, a
matplotlib figure. It travels on the bus like the seed's facts so the Jupyter layer can
consume it the same way, but ``skyward``'s exports stay exactly the seed page.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..events import NodeInstance

__all__ = ["Display", "LogLines"]


@dataclass(frozen=True, slots=True)
class LogLines:
    """A batch of a node's ``Log`` lines, as one agent frame carried them.

    The Jupyter layer (cell output, panel) consumes lines in batches: one event per frame
    instead of one per line keeps streaming fast. ``Log`` events are still published, one
    per line, whenever anyone subscribes to ``Log`` (or to every event).
    """

    instance: NodeInstance
    task_id: str | None
    lines: tuple[tuple[str, str, bool], ...]


@dataclass(frozen=True, slots=True)
class Display:
    """A mime bundle a remote cell displayed, in order with its ``Log`` lines."""

    instance: NodeInstance
    task_id: str | None
    data: dict[str, Any]
    metadata: dict[str, Any] = field(default_factory=dict)
