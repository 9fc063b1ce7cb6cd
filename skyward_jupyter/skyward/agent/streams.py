"""The worker's ``sys.stdout`` and ``sys.stderr``: printing is one list append.

A write appends ``(stream, text)`` to one shared list, so stdout/stderr interleaving is
kept exactly and printing costs no syscall; the worker's flusher sends the list to the
supervisor every few milliseconds, and ``flush()`` sends it at once (``print(...,
flush=True)`` before a crash is never lost). File descriptors 1 and 2 are pipes that the
supervisor reads itself, so subprocesses and C code are captured too. Standard library
only.
"""

from __future__ import annotations

import codecs
import io
import sys
from collections.abc import Callable
from functools import cache
from typing import Any

__all__ = ["Writer", "child_streams", "flush_c_streams"]


class _Std:
    """What code expects of a standard stream; closing it is ignored (later cells print)."""

    _fd = 1
    _flush: Callable[[], None] = staticmethod(lambda: None)

    def flush(self) -> None:
        self._flush()

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._fd  # the pipe: os.write and subprocesses reach the same supervisor

    def isatty(self) -> bool:
        return False

    def close(self) -> None:
        pass


class _BytesWriter(_Std, io.RawIOBase):
    """``sys.stdout.buffer``: bytes written to it join the same ordered chunks."""

    def __init__(self, name: str, fd: int, put: Any, flush: Callable[[], None]) -> None:
        self._name, self._fd, self._put, self._flush = name, fd, put, flush
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")

    def write(self, b: Any) -> int:
        text = self._decoder.decode(bytes(b))
        if text:
            self._put((self._name, text))
        return len(b)


class Writer(_Std, io.TextIOBase):
    """A text stream whose ``write`` is one list append (``put``)."""

    encoding = "utf-8"
    errors = "replace"
    newlines = None
    line_buffering = False

    def __init__(self, name: str, fd: int, put: Any, flush: Callable[[], None]) -> None:
        self._fd = fd
        self._flush = flush
        self.name = f"<{name}>"
        self.buffer = _BytesWriter(name, fd, put, flush)

        def write(s: str, _put: Any = put, _name: str = name, _str: type = str) -> int:
            if s.__class__ is not _str and not isinstance(s, _str):
                raise TypeError(f"write() argument must be str, not {type(s).__name__}")
            if s:
                _put((_name, s))
            return len(s)

        self.write = write  # a plain function: ~12% less per print than a bound method


def child_streams() -> None:
    """A forked child (multiprocessing) has no flusher: write to the pipes, a line a write."""
    for fd, attr in ((1, "stdout"), (2, "stderr")):
        raw = io.BufferedWriter(io.FileIO(fd, "w", closefd=False))
        setattr(sys, attr, io.TextIOWrapper(raw, "utf-8", "replace", line_buffering=True))


@cache
def _libc() -> Any:
    """The C library (for ``fflush``), loaded once; None where there is none."""
    try:
        import ctypes

        return ctypes.CDLL(None)
    except Exception:
        return None


def flush_c_streams() -> None:
    """What C code and ``sys.__stdout__`` buffered goes into the pipes before "done"."""
    libc = _libc()
    if libc is not None:
        libc.fflush(None)
    for stream in (sys.__stdout__, sys.__stderr__):
        try:
            if stream is not None:
                stream.flush()
        except Exception:
            pass
