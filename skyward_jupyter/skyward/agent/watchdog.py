"""The dead-kernel shutdown: an instance nobody is left to destroy stops itself.
Standard library only."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Protocol

from .outbox import log

__all__ = ["Watched", "watch_kernel"]


class Watched(Protocol):
    """What the watchdog reads of the supervisor (its own module stays below it)."""

    grace: float
    stopping: bool
    last_contact: float
    on_orphan: str

    def unlink(self) -> None: ...


def watch_kernel(supervisor: Watched) -> None:
    """Shut the instance down when the kernel has been silent for ``grace`` seconds.

    The kernel sends a heartbeat far more often than that; silence means the kernel
    (or its machine) is gone, and nobody is left to destroy this instance.
    """
    assert supervisor.grace
    step = max(0.2, min(5.0, supervisor.grace / 4))
    while not supervisor.stopping:
        time.sleep(step)
        silent = time.monotonic() - supervisor.last_contact
        if silent < supervisor.grace:
            continue
        log(f"no word from the kernel for {silent:.0f} s: shutting the instance down")
        if supervisor.on_orphan:
            subprocess.Popen(
                supervisor.on_orphan,
                shell=True,
                start_new_session=True,
                stdin=subprocess.DEVNULL,
                stdout=sys.stderr,
                stderr=sys.stderr,
            )
        time.sleep(2.0)  # let the shutdown take us with the instance
        supervisor.unlink()
        os._exit(0)
