"""Finding and killing every process of a local instance.

A node's commands may ``setsid``/``nohup`` themselves out of the node's process group (the
agent does), so the group is not enough. Every process the node starts carries
``SKYWARD_INSTANCE=<id>`` in its environment, and a scan of ``/proc/*/environ`` finds them
all, however they detached. Processes still in the node's session are found too, even if
they cleared their environment. Standard library only: the node imports this module.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterable

__all__ = ["MARKER", "kill_processes", "live_processes"]

MARKER = "SKYWARD_INSTANCE"
"""The environment variable that names the instance a process belongs to."""

_PREFIX = MARKER.encode() + b"="


def _read_proc(pid: int, name: str) -> bytes | None:
    """``/proc/<pid>/<name>``, or None where it cannot be read (gone, foreign)."""
    try:
        with open(f"/proc/{pid}/{name}", "rb") as f:
            return f.read()
    except OSError:
        return None


def _marker_of(pid: int) -> bytes | None:
    """The instance id in a process's environment, or None (gone, foreign, no marker)."""
    environ = _read_proc(pid, "environ")
    if environ is None:
        return None
    for entry in environ.split(b"\0"):
        if entry.startswith(_PREFIX):
            return entry[len(_PREFIX) :]
    return None


def _session_of(pid: int) -> int | None:
    """The session id of a live, non-zombie process."""
    stat = _read_proc(pid, "stat")
    if stat is None:
        return None
    # The command name is in parentheses and may contain spaces: split after the last ')'.
    fields = stat[stat.rfind(b")") + 2 :].split()
    if not fields or fields[0] in (b"Z", b"X"):
        return None
    return int(fields[3])


def _pids() -> list[int]:
    try:
        return [int(name) for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return []


def live_processes(
    instance_id: str | None = None, session: int | None = None, exclude: Iterable[int] = ()
) -> list[int]:
    """Pids carrying the marker of ``instance_id`` (of any instance if None).

    ``session`` also counts the processes of that session (a node's own session id is its
    pid). The caller itself and ``exclude`` never count. Zombies do not count: they hold no
    resources but a pid, and their parent reaps them.
    """
    skip = {os.getpid(), *exclude}
    wanted = None if instance_id is None else instance_id.encode()
    found = []
    for pid in _pids():
        if pid in skip:
            continue
        marker = _marker_of(pid)
        if marker is not None and (wanted is None or marker == wanted):
            if _session_of(pid) is not None:
                found.append(pid)
        elif session is not None and _session_of(pid) == session:
            found.append(pid)
    return sorted(found)


def _signal(pid: int, sig: int, instance_id: str | None, session: int | None) -> None:
    """Signal ``pid`` only if it still belongs to the instance (pid reuse is real)."""
    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        fd = None
    try:
        marker = _marker_of(pid)
        ours = marker is not None and instance_id is not None and marker == instance_id.encode()
        if not ours and not (session is not None and _session_of(pid) == session):
            return
        if fd is not None:
            signal.pidfd_send_signal(fd, sig)
        else:
            os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
    finally:
        if fd is not None:
            os.close(fd)


def kill_processes(
    instance_id: str,
    session: int | None = None,
    grace: float = 0.0,
    deadline: float = 5.0,
    exclude: Iterable[int] = (),
) -> list[int]:
    """Kill every process of the instance; return the pids still alive at the deadline.

    With ``grace`` > 0 they get SIGTERM first and that long to exit; then SIGKILL, repeated
    (a process may fork between a scan and its kill) until a scan finds none.
    """
    exclude = tuple(exclude)
    start = time.monotonic()
    if grace > 0:
        for pid in live_processes(instance_id, session, exclude):
            _signal(pid, signal.SIGTERM, instance_id, session)
        while time.monotonic() - start < grace and live_processes(instance_id, session, exclude):
            time.sleep(0.02)
    while True:
        alive = live_processes(instance_id, session, exclude)
        if not alive or time.monotonic() - start > grace + deadline:
            return alive
        for pid in alive:
            _signal(pid, signal.SIGKILL, instance_id, session)
        time.sleep(0.01)
