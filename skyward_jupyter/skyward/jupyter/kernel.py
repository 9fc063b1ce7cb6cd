"""What the extension keeps for this kernel: its session, its shell, its panel, and the
task of the ``up`` or cell that runs now (which the panel's buttons cancel)."""

from __future__ import annotations

import asyncio
import atexit
from dataclasses import dataclass
from typing import Any

from ..session import Session

__all__ = ["KERNEL", "Kernel", "session"]


@dataclass
class Kernel:
    """The extension's state in this kernel (one of it: ``KERNEL``)."""

    session: Session | None = None
    shell: Any = None
    panel: Any = None
    task: asyncio.Task[Any] | None = None
    """The ``up`` or cell running now: the panel's Interrupt button cancels it."""
    background: asyncio.Task[Any] | None = None
    """The orphan clean-up at load, or the closing of the channels at unload."""

    def the_session(self) -> Session:
        """This kernel's session (made on first use; destroyed at interpreter exit)."""
        if self.session is None:
            self.session = Session()
            atexit.register(self.at_exit)
        return self.session

    def at_exit(self) -> None:
        if self.session is not None:
            self.session.close_sync()


KERNEL = Kernel()


def session() -> Session:
    """This kernel's session."""
    return KERNEL.the_session()
