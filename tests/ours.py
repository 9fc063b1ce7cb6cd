"""The local instances of this test session only: other sessions on a shared machine run
container nodes too, and a test that counts processes must not count theirs."""

from __future__ import annotations

import os

from skyward.providers.container import live_processes as _all_live

__all__ = ["live_processes"]


def live_processes() -> list[int]:
    """Pids of local instances whose environment names this session's data folder (the
    node server's ``XDG_DATA_HOME``, its commands' ``HOME`` under it)."""
    mine = os.environ.get("XDG_DATA_HOME", "").encode()
    found = []
    for pid in _all_live():
        try:
            with open(f"/proc/{pid}/environ", "rb") as handle:
                environ = handle.read()
        except OSError:
            continue
        if not mine or mine in environ:
            found.append(pid)
    return found
