"""The ledger: every instance this user launched, on disk, until its end is confirmed.

An entry is written before the provider's launch call is made (so even a kernel killed
mid-launch leaves a trace), completed with the instance id the moment it is known, and
removed only once the provider confirms the destruction. On ``%load_ext skyward`` (and
``%skyward down --orphans``) entries whose kernel is gone are destroyed, unless they were
launched with ``--keep``.

Beside the instances, one record per cluster (:class:`ClusterEntry`) lists the shared
resources the provider is about to create (key pair, security group, firewall rules,
SSH keys, startup scripts, volumes), written before each creation and removed once the
cluster's teardown is confirmed, so that a cluster whose kernel died is cleaned up whole,
even one that died before its first launch.

One JSON file under the user's data directory, read and replaced whole under a lock file,
so several kernels can share it; each write is atomic and durable (0600 from creation,
fsynced, renamed over the old file). Forgetting an entry means paying for a machine
nobody knows about, so the file is never trusted blindly nor overwritten in doubt:

- a file that does not parse is kept aside as ``ledger.json.corrupt-<time>`` (never
  overwritten), the entries that can still be read are restored into a new ledger, and
  :meth:`Ledger.notices` tells the user what happened, in one line;
- fields this version does not know (a newer version wrote them) are kept in the file
  and ignored; an entry this version cannot read at all is kept as it is and reported.

The records and their strict reading are in ``ledger_entries``, the salvage of a damaged
file in ``ledger_repair``; their public names are importable from here.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import json
import os
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import LedgerError
from ..model import ClusterSpec
from .ledger_entries import (
    CLUSTER_RECORD,
    ClusterEntry,
    KernelIdentity,
    LedgerEntry,
    cluster_from,
    cluster_key,
    entry_from,
    is_cluster_record,
    recorded,
    spec_from_dict,
)
from .ledger_repair import LedgerDamage, salvage
from .private_files import private_dir, sync_dir, write_atomically

__all__ = [
    "ClusterEntry",
    "KernelIdentity",
    "Ledger",
    "LedgerDamage",
    "LedgerEntry",
    "cluster_key",
    "spec_from_dict",
]


class Ledger:
    """The ledger file, read and written whole under an exclusive lock."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.damage: list[LedgerDamage] = []
        """Damaged files this process found and set aside, oldest first."""
        self.unreadable: dict[str, str] = {}
        """Entries of the last read that this version cannot read: key -> why."""

    @contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        private_dir(self.path.parent)
        flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
        lock = os.open(self.path.with_suffix(".lock"), flags, 0o600)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            entries = self._read()
            before = _dump(entries)
            yield entries
            after = _dump(entries)
            if after != before:
                write_atomically(self.path, after)
        finally:
            os.close(lock)

    def _read(self) -> dict[str, Any]:
        """The stored entries (a damaged file is set aside and what it held restored)."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return self._classify({})
        except OSError as exc:
            return self._repair(b"", f"cannot be read: {exc.strerror or exc}")
        try:
            stored = json.loads(raw)
        except ValueError as exc:
            reason = "empty" if not raw.strip() else f"does not parse: {_first_line(exc)}"
            return self._repair(raw, reason)
        if not isinstance(stored, dict):
            return self._repair(raw, f"a JSON {type(stored).__name__}, not an object")
        return self._classify(stored)

    def _classify(self, stored: dict[str, Any]) -> dict[str, Any]:
        self.unreadable = {}
        for key, value in stored.items():
            entry = cluster_from(value) if is_cluster_record(value) else entry_from(value)
            if isinstance(entry, str):
                self.unreadable[key] = entry
        return stored

    def _repair(self, raw: bytes, reason: str) -> dict[str, Any]:
        """Keep the damaged file aside, never overwritten; restore what it still holds."""
        found = salvage(raw.decode("utf-8", errors="replace"))
        kept_as = self._set_aside()
        write_atomically(self.path, _dump(found.entries))
        restored = tuple(
            str(value.get("instance_id") or key) for key, value in found.entries.items()
        )
        self.damage.append(LedgerDamage(kept_as, reason, restored, tuple(found.fragments)))
        return self._classify(found.entries)

    def _set_aside(self) -> Path:
        """Give the damaged file a name of its own (a hard link, else a rename)."""
        stamp = time.strftime("%Y%m%dT%H%M%S")
        for attempt in range(100):
            suffix = f".corrupt-{stamp}" + (f"-{attempt}" if attempt else "")
            kept_as = self.path.with_name(self.path.name + suffix)
            try:
                os.link(self.path, kept_as, follow_symlinks=False)
            except FileExistsError:
                continue
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.EXDEV, errno.ENOTSUP, errno.EACCES):
                    raise LedgerError(f"cannot keep the damaged ledger aside: {exc}") from exc
                if os.path.lexists(kept_as):
                    continue
                try:
                    os.rename(self.path, kept_as)
                except OSError as again:
                    raise LedgerError(
                        f"cannot keep the damaged ledger {self.path} aside ({again}); "
                        "move it away by hand"
                    ) from again
            sync_dir(self.path.parent)
            return kept_as
        raise LedgerError(f"cannot find a free name to keep the damaged ledger {self.path} aside")

    def notices(self) -> list[str]:
        """One line per problem the user should know of (damage found, entries kept)."""
        lines = [damage.describe() for damage in self.damage]
        if self.unreadable:
            keys = sorted(self.unreadable)
            detail = "; ".join(f"{key}: {self.unreadable[key]}" for key in keys[:3])
            more = f" and {len(keys) - 3} more" if len(keys) > 3 else ""
            lines.append(
                f"skyward: {len(keys)} ledger entr{'y' if len(keys) == 1 else 'ies'} this "
                f"version cannot read (a newer skyward's?) kept as they are ({detail}{more}); "
                "they are never cleaned up by this version"
            )
        return lines

    def check(self) -> list[str]:
        """Read the ledger now (setting aside a damaged one) and return :meth:`notices`."""
        try:
            with self._locked():
                pass
        except (OSError, LedgerError) as exc:
            return [*self.notices(), f"skyward: cannot read the ledger {self.path}: {exc}"]
        return self.notices()

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
            recorded(spec),
            keep=bool(fields.pop("keep", False)),
            **fields,
        )
        with self._locked() as entries:
            entries[key] = dataclasses.asdict(entry)
        return key

    def update(self, key: str, **fields: Any) -> None:
        """Complete an entry (instance id, address, price) as facts arrive."""
        with self._locked() as entries:
            if isinstance(entries.get(key), dict):
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
                if isinstance(entries.get(key), dict):
                    entries[key].update(kernel_pid=kernel.pid, kernel_started=kernel.started)

    def begin_cluster(
        self, provider: str, cluster_id: str, spec: ClusterSpec, keep: bool, key_path: str
    ) -> None:
        """Record a cluster about to get shared resources (before ``prepare``)."""
        kernel = KernelIdentity.current()
        record = ClusterEntry(
            cluster_id, provider, kernel.pid, kernel.started, dataclasses.asdict(spec),
            keep=keep, key_path=key_path,
        )  # fmt: skip
        with self._locked() as entries:
            if not is_cluster_record(entries.get(record.key)):
                entries[record.key] = {"record": CLUSTER_RECORD, **dataclasses.asdict(record)}

    def note_resource(self, cluster_id: str, kind: str, resource_id: str) -> None:
        """Add a shared resource to the cluster's record; call it before creating it."""
        with self._locked() as entries:
            value = entries.get(cluster_key(cluster_id))
            if not is_cluster_record(value):
                raise LedgerError(f"no record of cluster {cluster_id} to note its {kind} in")
            resources = value.setdefault("resources", {})
            ids = resources.setdefault(kind, [])
            if resource_id not in ids:
                ids.append(resource_id)

    def cluster(self, cluster_id: str) -> ClusterEntry | None:
        """The resource record of one cluster (None if there is none this version reads)."""
        with self._locked() as entries:
            value = entries.get(cluster_key(cluster_id))
        found = cluster_from(value) if is_cluster_record(value) else None
        return found if isinstance(found, ClusterEntry) else None

    def clusters(self) -> list[ClusterEntry]:
        """Every cluster record, oldest first."""
        with self._locked() as entries:
            rows = [
                found
                for value in entries.values()
                if is_cluster_record(value)
                and isinstance(found := cluster_from(value), ClusterEntry)
            ]
        return sorted(rows, key=lambda c: c.created_at)

    def forget_cluster(self, cluster_id: str) -> None:
        """The cluster's teardown was confirmed: nothing of it is left."""
        with self._locked() as entries:
            entries.pop(cluster_key(cluster_id), None)

    def leftovers(self) -> list[ClusterEntry]:
        """Clusters of dead kernels with shared resources but no instance left: what a
        kernel killed before its first launch, or after its last destroy, left behind."""
        with_instances = {e.cluster_id for e in self.entries()}
        return [
            c
            for c in self.clusters()
            if c.cluster_id not in with_instances and not c.kernel.alive()
        ]

    def entries(self) -> list[LedgerEntry]:
        """Every entry, oldest first."""
        with self._locked() as entries:
            rows = [
                entry
                for value in entries.values()
                if isinstance(entry := entry_from(value), LedgerEntry)
            ]
        return sorted(rows, key=lambda e: e.launched_at)

    def orphans(self) -> list[LedgerEntry]:
        """Entries whose kernel is gone (kept ones included: the caller decides)."""
        return [e for e in self.entries() if not e.kernel.alive()]


def _dump(entries: dict[str, Any]) -> bytes:
    return json.dumps(entries, indent=1, sort_keys=True).encode()


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
