"""Requests of the core that the seed's vocabulary does not name: taking over a kept
cluster, and cleaning up after dead kernels. They travel on the bus like the seed's
requests (a ``reply_to`` for the answer), and are not part of ``import skyward``."""

from __future__ import annotations

from dataclasses import dataclass

from ..events import ReplyTo
from .ledger import LedgerEntry

__all__ = ["AttachRequested", "OrphansDestroyRequested", "OrphansDestroyed"]


@dataclass(frozen=True, slots=True)
class AttachRequested:
    """Take over the cluster ``name`` (an id or ``--name``) from the ledger; answered by
    ``ClusterReady`` or ``Error``."""

    request_id: str
    name: str
    reply_to: ReplyTo = None


@dataclass(frozen=True, slots=True)
class OrphansDestroyRequested:
    """Destroy what the ledger's ``entries`` (of dead kernels) left, and the shared
    resources of clusters with no instance left; answered by ``OrphansDestroyed``."""

    entries: tuple[LedgerEntry, ...]
    reply_to: ReplyTo = None


@dataclass(frozen=True, slots=True)
class OrphansDestroyed:
    """What an ``OrphansDestroyRequested`` destroyed, and what it could not (one line each)."""

    destroyed: int
    failures: tuple[str, ...] = ()
