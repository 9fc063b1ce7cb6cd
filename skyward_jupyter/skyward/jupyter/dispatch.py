"""The dispatcher: one ``%skyward`` line (and its cell) to the command that runs it, as a
coroutine on the kernel's loop (the input rewrite, ``transform.py``, awaits it)."""

from __future__ import annotations

from IPython.core.error import UsageError

from ..errors import UsageError as SkywardUsageError
from . import commands, options
from .kernel import session
from .live_panel import panel
from .run_command import run_cell

__all__ = ["dispatch"]


async def dispatch(line: str, cell: str | None) -> None:
    """Run one ``%skyward`` command."""
    __tracebackhide__ = True
    parsed = options.parse_command(line)
    if parsed is None:
        return
    command, args = parsed
    current = session()
    try:
        if command == "up":
            if cell is not None:
                raise UsageError("%skyward up is a line magic: use one %, not %%")
            await commands.up(current, args)
        elif command == "status":
            commands.status(current)
        elif command == "down":
            await (commands.down_orphans(current) if args.orphans else commands.down(current))
        elif command == "run":
            if cell is None:
                raise UsageError("use %%skyward run (two %) at the top of the cell to run")
            await run_cell(current, args, cell, line)
        elif command == "panel":
            panel().show(sidebar=args.sidebar)
        elif command == "offers":
            await commands.offers(current, args)
        elif command == "attach":
            await commands.attach(current, args.cluster)
        elif command in ("sync", "get", "put"):
            await commands.files(current, command, args)
    except SkywardUsageError as exc:
        raise UsageError(str(exc)) from None
