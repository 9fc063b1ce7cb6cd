"""This kernel's live panel, and what its buttons do."""

from __future__ import annotations

import asyncio
from typing import Any

from .kernel import KERNEL

__all__ = ["close_panel", "panel"]


def panel() -> Any:
    """This kernel's live panel (made on first use, on the kernel's loop)."""
    from .panel.widget import Panel

    session = KERNEL.the_session()
    current = KERNEL.panel
    if current is None or current.bus is not session.events:
        if current is not None:
            current.close()
        actions = {"shutdown": _shutdown, "interrupt": _interrupt}
        current = KERNEL.panel = Panel(session.events, asyncio.get_running_loop(), actions)
    return current


def close_panel() -> None:
    """Close the panel's views (at unload)."""
    current, KERNEL.panel = KERNEL.panel, None
    if current is not None:
        current.close()


def _interrupt() -> None:
    """The Interrupt button (on the loop): cancel the running ``up`` or cell."""
    task = KERNEL.task
    if task is not None and not task.done():
        task.cancel()


async def _shutdown() -> None:
    """The Shut down button: stop what runs, then destroy the cluster."""
    _interrupt()
    for _ in range(200):  # let an interrupted cell or up finish its own clean-up
        if KERNEL.task is None:
            break
        await asyncio.sleep(0.05)
    session = KERNEL.the_session()
    if session.is_up():
        await session.down()
