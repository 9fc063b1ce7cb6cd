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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import LedgerError
from ..model import ClusterSpec
from ..secrets import mask_url_credentials
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


def _is_cluster_record(value: Any) -> bool:
    return isinstance(value, dict) and value.get("record") == CLUSTER_RECORD


def _cluster_from(value: Any) -> ClusterEntry | str:
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


def _entry_from(value: Any) -> LedgerEntry | str:
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


def _recorded(spec: ClusterSpec) -> dict[str, Any]:
    """The spec as the ledger keeps it: no credentials in ``--pip`` URLs."""
    values = dataclasses.asdict(spec)
    values["pip"] = [mask_url_credentials(p) for p in spec.pip]
    return values


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
            entry = _cluster_from(value) if _is_cluster_record(value) else _entry_from(value)
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
            _recorded(spec),
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
            if not _is_cluster_record(entries.get(record.key)):
                entries[record.key] = {"record": CLUSTER_RECORD, **dataclasses.asdict(record)}

    def note_resource(self, cluster_id: str, kind: str, resource_id: str) -> None:
        """Add a shared resource to the cluster's record; call it before creating it."""
        with self._locked() as entries:
            value = entries.get(cluster_key(cluster_id))
            if not _is_cluster_record(value):
                raise LedgerError(f"no record of cluster {cluster_id} to note its {kind} in")
            resources = value.setdefault("resources", {})
            ids = resources.setdefault(kind, [])
            if resource_id not in ids:
                ids.append(resource_id)

    def cluster(self, cluster_id: str) -> ClusterEntry | None:
        """The resource record of one cluster (None if there is none this version reads)."""
        with self._locked() as entries:
            value = entries.get(cluster_key(cluster_id))
        found = _cluster_from(value) if _is_cluster_record(value) else None
        return found if isinstance(found, ClusterEntry) else None

    def clusters(self) -> list[ClusterEntry]:
        """Every cluster record, oldest first."""
        with self._locked() as entries:
            rows = [
                found
                for value in entries.values()
                if _is_cluster_record(value)
                and isinstance(found := _cluster_from(value), ClusterEntry)
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
                if isinstance(entry := _entry_from(value), LedgerEntry)
            ]
        return sorted(rows, key=lambda e: e.launched_at)

    def orphans(self) -> list[LedgerEntry]:
        """Entries whose kernel is gone (kept ones included: the caller decides)."""
        return [e for e in self.entries() if not e.kernel.alive()]


def _dump(entries: dict[str, Any]) -> bytes:
    return json.dumps(entries, indent=1, sort_keys=True).encode()


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
