"""The ledger: every instance this user launched, on disk, until its end is confirmed.

An entry is written before the provider's launch call is made (so even a kernel killed
mid-launch leaves a trace), completed with the instance id the moment it is known, and
removed only once the provider confirms the destruction. On ``%load_ext skyward`` (and
``%skyward down --orphans``) entries whose kernel is gone are destroyed, unless they were
launched with ``--keep``.

One JSON file under the user's data directory, replaced atomically under a lock file, so
several kernels can share it.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..model import ClusterSpec

__all__ = ["KernelIdentity", "Ledger", "LedgerEntry", "spec_from_dict"]


@dataclass(frozen=True, slots=True)
class KernelIdentity:
    """A process, told apart from a later one that reuses its pid."""

    pid: int
    started: str

    @classmethod
    def current(cls) -> KernelIdentity:
        return cls(os.getpid(), _start_time(os.getpid()))

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


def spec_from_dict(data: dict[str, Any]) -> ClusterSpec:
    """A ClusterSpec back from its ledger form (lists become tuples again)."""
    values = dict(data)
    for name in ("pip", "apt"):
        values[name] = tuple(values.get(name, ()))
    values["env"] = tuple(tuple(pair) for pair in values.get("env", ()))
    known = {f.name for f in dataclasses.fields(ClusterSpec)}
    return ClusterSpec(**{k: v for k, v in values.items() if k in known})


class Ledger:
    """The ledger file, read and written whole under an exclusive lock."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @contextmanager
    def _locked(self) -> Iterator[dict[str, dict[str, Any]]]:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(self.path.with_suffix(".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                entries = json.loads(self.path.read_text()) if self.path.exists() else {}
            except (OSError, ValueError):
                entries = {}
            before = json.dumps(entries, sort_keys=True)
            yield entries
            if json.dumps(entries, sort_keys=True) != before:
                temporary = self.path.with_suffix(f".{os.getpid()}.tmp")
                temporary.write_text(json.dumps(entries, indent=1, sort_keys=True))
                os.chmod(temporary, 0o600)
                os.replace(temporary, self.path)

    def begin(
        self, provider: str, cluster_id: str, node: int, spec: ClusterSpec, **fields: Any
    ) -> str:
        """Record a launch about to be made; returns the entry's key."""
        kernel = KernelIdentity.current()
        key = f"{cluster_id}/{node}/{secrets.token_hex(3)}"
        entry = LedgerEntry(
            key,
            provider,
            cluster_id,
            node,
            kernel.pid,
            kernel.started,
            dataclasses.asdict(spec),
            keep=bool(fields.pop("keep", False)),
            **fields,
        )
        with self._locked() as entries:
            entries[key] = dataclasses.asdict(entry)
        return key

    def update(self, key: str, **fields: Any) -> None:
        """Complete an entry (instance id, address, price) as facts arrive."""
        with self._locked() as entries:
            if key in entries:
                entries[key].update(fields)

    def remove(self, key: str) -> None:
        """The instance's destruction was confirmed."""
        with self._locked() as entries:
            entries.pop(key, None)

    def adopt(self, keys: list[str]) -> None:
        """This kernel takes over entries (``%skyward attach``)."""
        kernel = KernelIdentity.current()
        with self._locked() as entries:
            for key in keys:
                if key in entries:
                    entries[key].update(kernel_pid=kernel.pid, kernel_started=kernel.started)

    def entries(self) -> list[LedgerEntry]:
        """Every entry, oldest first."""
        with self._locked() as entries:
            rows = [LedgerEntry(**value) for value in entries.values()]
        return sorted(rows, key=lambda e: e.launched_at)

    def orphans(self) -> list[LedgerEntry]:
        """Entries whose kernel is gone (kept ones included: the caller decides)."""
        return [e for e in self.entries() if not e.kernel.alive()]
