"""The records of the ledger file, and how each is read back from its JSON.

An instance's :class:`LedgerEntry` and a cluster's :class:`ClusterEntry` name the kernel
that launched them by :class:`KernelIdentity` (a pid and its start time), so that a later
process reusing the pid does not keep a dead kernel's instances alive. Reading is strict:
a stored object of the wrong shape is not guessed at but named (why it cannot be read),
so the ledger keeps it as it is instead of losing or misreading it.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from typing import Any, TypeGuard

from ..model import ClusterSpec
from ..secrets import mask_url_credentials

__all__ = [
    "CLUSTER_RECORD",
    "ClusterEntry",
    "KernelIdentity",
    "LedgerEntry",
    "cluster_from",
    "cluster_key",
    "entry_from",
    "is_cluster_record",
    "recorded",
    "spec_from_dict",
]

CLUSTER_RECORD = "cluster"
"""The ``record`` field of a cluster's resource record (an instance entry has none)."""


@dataclass(frozen=True, slots=True)
class KernelIdentity:
    """A process, told apart from a later one that reuses its pid."""

    pid: int
    started: str

    @classmethod
    def current(cls) -> KernelIdentity:
        return cls.of(os.getpid())

    @classmethod
    def of(cls, pid: int) -> KernelIdentity:
        """The process running as ``pid`` now."""
        return cls(pid, _start_time(pid))

    def alive(self) -> bool:
        """Whether this very process still runs."""
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        return _start_time(self.pid) == self.started


def _start_time(pid: int) -> str:
    """The process's start time (clock ticks since boot), "" if it is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return ""
    if fields[0] in ("Z", "X"):  # exited, not yet reaped by its parent
        return ""
    return fields[19]


@dataclass(slots=True)
class LedgerEntry:
    """One instance (or one launch whose instance id is not known yet)."""

    key: str
    provider: str
    cluster_id: str
    node: int
    kernel_pid: int
    kernel_started: str
    spec: dict[str, Any]
    instance_id: str | None = None
    launched_at: float = field(default_factory=time.time)
    price_per_hour: float = 0.0
    keep: bool = False
    host_public_key: str = ""
    ip: str = ""
    private_ip: str = ""
    ssh_port: int = 22
    ssh_user: str = ""
    key_path: str = ""

    @property
    def kernel(self) -> KernelIdentity:
        return KernelIdentity(self.kernel_pid, self.kernel_started)


@dataclass(slots=True)
class ClusterEntry:
    """One cluster's shared resources: kind -> names and ids, each recorded before the
    provider creates it."""

    cluster_id: str
    provider: str
    kernel_pid: int
    kernel_started: str
    spec: dict[str, Any]
    resources: dict[str, list[str]] = field(default_factory=dict)
    keep: bool = False
    key_path: str = ""
    created_at: float = field(default_factory=time.time)

    @property
    def kernel(self) -> KernelIdentity:
        return KernelIdentity(self.kernel_pid, self.kernel_started)

    @property
    def key(self) -> str:
        return cluster_key(self.cluster_id)


def cluster_key(cluster_id: str) -> str:
    """Where a cluster's resource record is kept in the ledger file."""
    return f"{cluster_id}/{CLUSTER_RECORD}"


_CLUSTER_TYPES: dict[str, type | tuple[type, ...]] = {
    "cluster_id": str,
    "provider": str,
    "kernel_pid": int,
    "kernel_started": str,
    "spec": dict,
    "resources": dict,
    "keep": bool,
    "key_path": str,
    "created_at": (int, float),
}
_CLUSTER_REQUIRED = ("cluster_id", "provider", "kernel_pid", "kernel_started", "spec")


def is_cluster_record(value: Any) -> TypeGuard[dict[str, Any]]:
    return isinstance(value, dict) and value.get("record") == CLUSTER_RECORD


def cluster_from(value: Any) -> ClusterEntry | str:
    """The cluster record a stored object describes, or why this version cannot read it."""
    missing = [name for name in _CLUSTER_REQUIRED if name not in value]
    if missing:
        return f"no {', '.join(missing)}"
    wrong = [
        n for n, kind in _CLUSTER_TYPES.items() if n in value and not isinstance(value[n], kind)
    ]
    resources = value.get("resources", {})
    if isinstance(resources, dict) and not all(
        isinstance(ids, list) and all(isinstance(i, str) for i in ids) for ids in resources.values()
    ):
        wrong.append("resources")
    if wrong:
        return f"unexpected {', '.join(wrong)}"
    known = (f.name for f in dataclasses.fields(ClusterEntry))
    found = ClusterEntry(**{name: value[name] for name in known if name in value})
    found.resources = {kind: list(ids) for kind, ids in found.resources.items()}
    return found


_TYPES: dict[str, type | tuple[type, ...]] = {
    "key": str,
    "provider": str,
    "cluster_id": str,
    "node": int,
    "kernel_pid": int,
    "kernel_started": str,
    "spec": dict,
    "instance_id": (str, type(None)),
    "launched_at": (int, float),
    "price_per_hour": (int, float),
    "keep": bool,
    "host_public_key": str,
    "ip": str,
    "private_ip": str,
    "ssh_port": int,
    "ssh_user": str,
    "key_path": str,
}
_REQUIRED = ("key", "provider", "cluster_id", "node", "kernel_pid", "kernel_started", "spec")


def entry_from(value: Any) -> LedgerEntry | str:
    """The entry a stored object describes, or why this version cannot read it.

    Fields it does not know are left out here (and kept in the file by the caller).
    """
    if not isinstance(value, dict):
        return f"a JSON {type(value).__name__}, not an object"
    missing = [name for name in _REQUIRED if name not in value]
    if missing:
        return f"no {', '.join(missing)}"
    wrong = [n for n, kind in _TYPES.items() if n in value and not isinstance(value[n], kind)]
    if wrong:
        return f"unexpected {', '.join(wrong)}"
    known = (f.name for f in dataclasses.fields(LedgerEntry))
    return LedgerEntry(**{name: value[name] for name in known if name in value})


def spec_from_dict(data: dict[str, Any]) -> ClusterSpec:
    """A ClusterSpec back from its ledger form (lists become tuples again)."""
    values = dict(data)
    for name in ("pip", "apt", "sync_dirs"):
        values[name] = tuple(values.get(name, ()))
    # names only (an older ledger kept (name, value) pairs: their values are dropped)
    values["env"] = tuple(
        item[0] if isinstance(item, list | tuple) else item for item in values.get("env", ())
    )
    known = {f.name for f in dataclasses.fields(ClusterSpec)}
    return ClusterSpec(**{k: v for k, v in values.items() if k in known})


def recorded(spec: ClusterSpec) -> dict[str, Any]:
    """The spec as the ledger keeps it: no credentials in ``--pip`` URLs."""
    values = dataclasses.asdict(spec)
    values["pip"] = [mask_url_credentials(p) for p in spec.pip]
    return values
