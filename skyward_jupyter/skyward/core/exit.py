"""Destroying this kernel's instances at interpreter exit, when its loop may be gone.

The lifecycle's own destroy path runs on a fresh loop in a helper thread, with a bus of
its own that nobody else listens to (the kernel's subscribers belong to a loop that may
be stopped), so this works whether or not the kernel's loop still runs. That loop's
``to_thread`` starts plain threads: at exit ``concurrent.futures`` takes no new work.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from ..events import Error
from .bus import EventBus
from .ledger import Ledger
from .lifecycle import KeyForgetter, Lifecycle
from .plain_threads import PlainThreadExecutor
from .registry import Registry

__all__ = ["destroy_at_exit"]

log = logging.getLogger("skyward")


def destroy_at_exit(
    registry: Registry,
    ledger: Ledger | None,
    forget_keys: KeyForgetter | None,
    timeout: float = 60.0,
) -> None:
    """Destroy every live cluster of ``registry`` not started with ``--keep``; wait at
    most ``timeout`` seconds."""
    live = [r for r in registry.live() if not r.spec.keep]
    if not live:
        return

    async def destroy_all() -> None:
        bus = EventBus()
        bus.subscribe(Error, lambda e: log.error("skyward: at exit: %s", e.message))
        lifecycle = Lifecycle(
            bus, Registry(), _nothing, _nothing, _nothing, ledger=ledger, forget_keys=forget_keys
        )
        await asyncio.gather(*(lifecycle.destroy_cluster(r) for r in live))

    def run() -> None:
        with asyncio.Runner() as runner:
            runner.get_loop().set_default_executor(PlainThreadExecutor())
            runner.run(destroy_all())

    thread = threading.Thread(target=run, name="skyward-exit", daemon=True)
    thread.start()
    thread.join(timeout)


def _nothing(*_: Any) -> Any:
    raise RuntimeError("nothing is launched at exit")
