"""Facts the seed vocabulary has no word for, kept out of the public API.

A remote cell's outputs travel on the bus like the seed's facts, so the Jupyter layer
consumes them the same way, but ``skyward``'s exports stay exactly the seed page:
``LogLines`` (a batch of ``Log`` lines), ``Display`` (a mime bundle: ``display(df)``, a
figure), ``Result`` (the cell's value), ``Clear`` (``clear_output``), and
``WorkerCrashed`` (the node's worker died; the instance is fine).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..events import NodeInstance
from ..protocol import Crash

__all__ = ["Clear", "Display", "LogLines", "Output", "Result", "WorkerCrashed"]


@dataclass(frozen=True, slots=True)
class LogLines:
    """A batch of a node's ``Log`` lines, as one agent frame carried them.

    The Jupyter layer (cell output, panel) consumes lines in batches: one event per frame
    instead of one per line keeps streaming fast. ``Log`` events are still published, one
    per line, whenever anyone subscribes to ``Log`` (or to every event). ``partial``
    names the streams whose last line here is unfinished; ``after`` is the cell that ran
    last, for lines written between cells (``task_id`` None); ``panel_only`` lines are
    past the cell's output budget.
    """

    instance: NodeInstance
    task_id: str | None
    lines: tuple[tuple[str, str, bool], ...]
    partial: tuple[str, ...] = ()
    after: str | None = None
    panel_only: bool = False


@dataclass(frozen=True, slots=True)
class Display:
    """A mime bundle a remote cell displayed, in order with its ``Log`` lines."""

    instance: NodeInstance
    task_id: str | None
    data: dict[str, Any]
    metadata: dict[str, Any] = field(default_factory=dict)
    transient: dict[str, Any] = field(default_factory=dict)
    update: bool = False


@dataclass(frozen=True, slots=True)
class Result:
    """The value of a remote cell's last expression, as the node's IPython formatted it."""

    instance: NodeInstance
    task_id: str
    count: int
    data: dict[str, Any]
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Clear:
    """``clear_output(wait)`` in a remote cell."""

    instance: NodeInstance
    task_id: str | None
    wait: bool = False


@dataclass(frozen=True, slots=True)
class WorkerCrashed:
    """The worker holding a node's namespace died: how, and what it wrote last."""

    instance: NodeInstance
    crash: Crash


Output = LogLines | Display | Result | Clear | WorkerCrashed
"""Every fact of this module: the bus carries them beside the seed's events."""
