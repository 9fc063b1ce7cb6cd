"""IPython on the node: an ``InteractiveShell`` whose outputs become protocol messages.

Three seams, the same ones ipykernel uses: a display publisher (``display()``, figures,
``clear_output``), a display hook (the cell's value, formatted by IPython, with ``Out``
and ``_`` kept by IPython itself), and ``_showtraceback`` (IPython's own rendering of an
error, kept for the kernel instead of printed). Everything else is IPython's.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from IPython.core.displayhook import DisplayHook
from IPython.core.displaypub import DisplayPublisher
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from traitlets.config import Config


class Outputs(Protocol):
    """Where the shell's outputs go: the worker, which frames them for the supervisor
    (a protocol, so that this module does not import the worker that imports it)."""

    last_traceback: list[str] | None

    def display(
        self, data: dict[str, Any], metadata: dict[str, Any] | None, transient: Any, update: bool
    ) -> Any: ...

    def clear(self, wait: bool) -> None: ...

    def result(self, count: int, data: dict[str, Any], metadata: dict[str, Any]) -> None: ...

    def record_output(self, count: int | None) -> None: ...

    def note_output(self) -> None: ...


__all__ = ["KERNEL_ONLY", "make_shell"]

KERNEL_ONLY = "%skyward runs in the notebook's kernel, not on a node: use it in a cell of its own"


class NodeShell(InteractiveShell):
    """IPython's shell, with tracebacks kept for the kernel rather than printed."""

    worker: Any = None

    def _showtraceback(self, etype: Any, evalue: Any, stb: list[str]) -> None:
        self.worker.last_traceback = list(stb)

    @contextmanager
    def _tee(self, channel: str) -> Iterator[None]:
        """IPython's capture of a cell's stream into its output history, done by the worker
        a joined run at a time rather than on every ``write``."""
        if channel != "stdout":  # one recording serves both streams
            yield
            return
        self.worker.record_output(self.execution_count)
        try:
            yield
        finally:
            self.worker.record_output(None)

    def ask_exit(self) -> None:
        """``exit()`` in a remote cell: the node's worker stays (the kernel owns the node)."""


def make_shell(worker: Outputs) -> NodeShell:
    """The node's shell, wired to ``worker``."""

    class Publisher(DisplayPublisher):
        def publish(  # type: ignore[override]
            self,
            data: dict[str, Any],
            metadata: dict[str, Any] | None = None,
            source: str | None = None,
            *,
            transient: dict[str, Any] | None = None,
            update: bool = False,
            **kwargs: Any,
        ) -> None:
            worker.display(data, metadata, transient, update)

        def clear_output(self, wait: bool = False) -> None:
            worker.clear(wait)

    class Hook(DisplayHook):
        def start_displayhook(self) -> None:
            worker.note_output()  # what was printed before the value, first in the history
            self._data: dict[str, Any] = {}
            self._metadata: dict[str, Any] = {}

        def write_output_prompt(self) -> None:
            pass

        def write_format_data(self, format_dict: dict, md_dict: dict | None = None) -> None:
            self._data, self._metadata = format_dict, md_dict or {}

        def finish_displayhook(self) -> None:
            if self._data:
                worker.result(self.prompt_count, self._data, self._metadata)

    config = Config()
    config.HistoryManager.hist_file = ":memory:"
    os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    NodeShell.worker = worker
    shell = NodeShell.instance(config=config, display_pub_class=Publisher, displayhook_class=Hook)
    _kernel_only_magics(shell)
    shell.set_custom_exc((KeyboardInterrupt,), _interrupted)
    return shell


def _interrupted(shell: Any, etype: type, value: BaseException, tb: Any, tb_offset: Any = None):
    """An interrupt is raised by the worker's signal handler: show the traceback without
    that frame (and anything of ours), as a local cell shows its interrupt."""
    here = os.path.dirname(os.path.abspath(__file__))
    last = None
    node = tb
    while node is not None and not node.tb_frame.f_code.co_filename.startswith(here):
        last, node = node, node.tb_next
    if last is not None:
        last.tb_next = None
        value.__traceback__ = tb
    stb = shell.InteractiveTB.structured_traceback(etype, value, tb, tb_offset=tb_offset)
    shell._showtraceback(etype, value, stb)
    return stb


def _kernel_only_magics(shell: InteractiveShell) -> None:
    """``%skyward`` and ``%load_ext skyward`` say in one line where they belong."""

    def skyward(line: str = "", cell: str | None = None) -> None:
        raise UsageError(KERNEL_ONLY)

    shell.register_magic_function(skyward, "line_cell", "skyward")
    for name in ("load_ext", "unload_ext", "reload_ext"):
        original = shell.find_line_magic(name)
        if original is None:
            continue

        def guarded(line: str, _original: Any = original, _name: str = name) -> Any:
            if line.split()[:1] == ["skyward"]:
                raise UsageError(f"%{_name} skyward: {KERNEL_ONLY}")
            return _original(line)

        shell.register_magic_function(guarded, "line", name)
