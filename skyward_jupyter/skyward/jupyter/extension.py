"""``%load_ext skyward``: the magics, the input rewrite, and cleanup at unload and exit.

Reference (also ``%skyward --help`` and ``%skyward?``)::

    %skyward up [--provider P] [--nodes N] [--gpus SPEC] [--pip PKG ...] [--env K=V]
                [--spot | --on-demand] [--region R] [--max-price USD]
                [--runtime process|docker|podman] [--name NAME] [--timeout S]
                [--no-sync-packages] [--python PATH] [--sync DIR]
    %skyward status
    %skyward down
    %%skyward run [--on all|N|N,M]
    %skyward panel [--sidebar]
    %skyward offers [--provider P] [--gpus SPEC] [--spot | --on-demand] [--region R]
                    [--max-price USD]
    %skyward sync [DIR ...]
    %skyward get REMOTE [LOCAL] [--on N]
    %skyward put LOCAL [REMOTE] [--on all|N|N,M]
"""

from __future__ import annotations

import asyncio
import atexit
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class, no_var_expand

from ..session import Session
from . import commands, options
from .dispatch import dispatch
from .kernel import KERNEL, session
from .live_panel import close_panel
from .transform import rewrite
from .waker import WAKER

__all__ = ["dispatch", "load", "session", "unload"]


@magics_class
class SkywardMagics(Magics):
    """The ``%skyward`` magics. Cells using them are rewritten into ``await`` first, so
    these methods run only when called by other means (``run_line_magic``)."""

    @no_var_expand
    @line_cell_magic
    def skyward(self, line: str, cell: str | None = None) -> None:
        """Provision clusters and run cells on them.

        Examples
        --------
        In [1]: %skyward up --provider container --nodes 2
        ✓ cluster sky-3f2a91bc ready: 2 node(s) on container (local-process) in 1.9 s

        In [2]: %%skyward run
           ...: import os; os.environ["SKYWARD_NODE"]
        [node 0] '0'
        [node 1] '1'

        In [3]: %skyward down
        cluster sky-3f2a91bc destroyed (2 instances)
        """
        parsed = options.parse_command(line)
        if parsed is None:
            return
        command, _ = parsed
        if command == "status":
            commands.status(session())
            return
        raise UsageError(
            f"%skyward {command} must start a line of its own in a cell (it runs as a "
            "coroutine on the kernel's loop)"
        )


SkywardMagics.skyward.__doc__ = (SkywardMagics.skyward.__doc__ or "") + "\n" + options.help_text()


def load(shell: Any) -> None:
    """Register the magics and the rewrite on ``shell``."""
    KERNEL.shell = shell
    WAKER.install()
    shell.register_magics(SkywardMagics)
    cleanup = shell.input_transformers_cleanup
    if rewrite not in cleanup:
        cleanup.append(rewrite)
    current = session()
    current.colors = str(getattr(shell, "colors", "") or "")
    commands.check_orphans(current)


def unload(shell: Any) -> None:
    """Destroy this kernel's instances, then remove the rewrite and the magics."""
    close_panel()
    current: Session | None = KERNEL.session
    if current is not None:
        current.close_sync()
        KERNEL.session = None
        atexit.unregister(KERNEL.at_exit)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is not None:
            KERNEL.background = loop.create_task(current.detach())
    cleanup = shell.input_transformers_cleanup
    if rewrite in cleanup:
        cleanup.remove(rewrite)
    WAKER.remove()
    shell.magics_manager.magics["line"].pop("skyward", None)
    shell.magics_manager.magics["cell"].pop("skyward", None)
