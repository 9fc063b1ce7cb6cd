"""Output capture on an instance: what cells print, turned into lines for the kernel.

``sys.stdout``/``sys.stderr`` are replaced by writers that append ``(stream, text)``
chunks to one sink, in order, so stdout/stderr interleaving is kept exactly and printing
costs no syscall; fds 1 and 2 go to pipes read by a thread, so subprocesses and C code are
captured too. The sink turns chunks into ``(stream, line, overwrite)`` lines with
progress-bar semantics (``\r`` rewrites the line). Standard library only: uploaded with
the agent.
"""

from __future__ import annotations

import codecs
import io
import os
import select
import sys
import threading
import time
from itertools import groupby, repeat
from operator import itemgetter
from typing import Any

__all__ = ["Capture", "LineSink", "Writer"]

PROGRESS_INTERVAL = 0.1  # seconds between two provisional states of one line (tqdm's pace)

_first = itemgetter(0)
_second = itemgetter(1)


def log(message: str) -> None:
    """Diagnostics; the agent points this at its own log (never a cell's output)."""
    sys.__stderr__.write(message + "\n")


class _Stream:
    """Line state of one stream: the open line, whether the last sent line was provisional."""

    __slots__ = ("born", "buf", "cr", "open", "shown", "when")

    def __init__(self) -> None:
        self.buf = ""  # the current (unterminated) line
        self.cr = False  # text ended with "\r": decided by the next char ("\r\n" or reset)
        self.open = False  # the last line sent was provisional: the next one replaces it
        self.shown: str | None = None  # text of that provisional line (not to resend it)
        self.when = 0.0  # when it was sent
        self.born: float | None = None  # when the unfinished line was first seen


def _after_cr(text: str) -> str:
    """What a "\r" progress bar leaves on screen: the text after the last carriage return."""
    return text[text.rfind("\r") + 1 :] if "\r" in text else text


class LineSink:
    """Ordered (stream, text) chunks in; (stream, line, overwrite) lines out.

    Writers only append to ``chunks`` (one list append per write, no lock: list append,
    slice and slice deletion are atomic under the GIL), so printing stays cheap; the
    flusher turns chunks into lines with progress-bar semantics.
    """

    def __init__(self) -> None:
        self.chunks: list[tuple[str, str]] = []
        self.put = self.chunks.append
        self._streams: dict[str, _Stream] = {}
        self.deferred = False  # a provisional line waits for PROGRESS_INTERVAL to pass

    def take(self, end: bool = False) -> list[tuple[str, str, bool]]:
        """Lines for everything written so far; ``end`` closes open lines (a cell ended)."""
        chunks = self.chunks
        n = len(chunks)
        items = chunks[:n]
        del chunks[:n]
        out: list[tuple[str, str, bool]] = []
        for name, group in groupby(items, _first):
            self._feed(name, "".join(map(_second, group)), out)
        now = time.monotonic()
        self.deferred = False
        for name, st in self._streams.items():
            if st.buf and st.buf != st.shown:
                if st.born is None:
                    st.born = now
                # a line is shown unfinished only once it has waited a flush (not while
                # print() is between its text and its "\n"), and a progress bar is redrawn
                # at most every PROGRESS_INTERVAL
                due = now - st.when >= PROGRESS_INTERVAL if st.open else now > st.born
                if due or end:
                    out.append((name, st.buf, st.open))
                    st.open, st.shown, st.when = True, st.buf, now
                else:
                    self.deferred = True
            if end:
                st.buf, st.cr, st.open, st.shown, st.born = "", False, False, None, None
        return out

    def _feed(self, name: str, text: str, out: list[tuple[str, str, bool]]) -> None:
        st = self._streams.get(name)
        if st is None:
            st = self._streams[name] = _Stream()
        if st.cr:
            text = "\r" + text
            st.cr = False
        if text.endswith("\r"):
            text = text[:-1]
            st.cr = True
        cr = "\r" in text
        if cr:
            text = text.replace("\r\n", "\n")
        parts = text.split("\n")
        head = parts[0]
        head = _after_cr(head) if cr and "\r" in head else st.buf + head
        if len(parts) == 1:
            st.buf = head
            return
        out.append((name, head, st.open))
        st.open, st.shown, st.born = False, None, None
        if len(parts) > 2:
            middle = parts[1:-1]
            out.extend(zip(repeat(name), map(_after_cr, middle) if cr else middle, repeat(False)))
        st.buf = _after_cr(parts[-1]) if cr else parts[-1]


class _Std:
    """What code expects of a standard stream; closing it is ignored (later cells print)."""

    _fd = 1

    def flush(self) -> None:
        pass

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._fd  # the pipe: os.write and subprocesses land in the same sink

    def isatty(self) -> bool:
        return False

    def close(self) -> None:
        pass


class _BytesWriter(_Std, io.RawIOBase):
    """``sys.stdout.buffer``: bytes written to it join the same ordered sink."""

    def __init__(self, name: str, fd: int, put: Any) -> None:
        self._name, self._fd, self._put = name, fd, put
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")

    def write(self, b: Any) -> int:
        text = self._decoder.decode(bytes(b))
        if text:
            self._put((self._name, text))
        return len(b)


class Writer(_Std, io.TextIOBase):
    """``sys.stdout``/``sys.stderr`` while the agent runs: a write is one list append."""

    encoding = "utf-8"
    errors = "replace"
    newlines = None
    line_buffering = False

    def __init__(self, name: str, fd: int, put: Any) -> None:
        self._fd = fd
        self.name = f"<{name}>"
        self.buffer = _BytesWriter(name, fd, put)

        def write(s: str, _put: Any = put, _name: str = name, _str: type = str) -> int:
            if s.__class__ is not _str and not isinstance(s, _str):
                raise TypeError(f"write() argument must be str, not {type(s).__name__}")
            if s:
                _put((_name, s))
            return len(s)

        self.write = write  # a plain function: ~12% less per print than a bound method


class Capture:
    """Routes sys.stdout/stderr and file descriptors 1 and 2 into one ``LineSink``.

    The descriptors become pipes so subprocesses and C code are captured too; a thread
    pumps them, and ``drain`` reads what is already in them before a cell's "done".
    """

    def __init__(self, sink: LineSink) -> None:
        self.sink = sink
        self._lock = threading.Lock()
        self._saved: list[int] = []
        self._fds: dict[int, tuple[str, Any]] = {}
        self._libc: Any = None

    def install(self) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, name in ((1, "stdout"), (2, "stderr")):
            r, w = os.pipe()
            self._saved.append(os.dup(fd))
            os.dup2(w, fd)
            os.close(w)
            os.set_blocking(r, False)
            self._fds[r] = (name, codecs.getincrementaldecoder("utf-8")("replace"))
        sys.stdout = Writer("stdout", 1, self.sink.put)
        sys.stderr = Writer("stderr", 2, self.sink.put)
        threading.Thread(target=self._pump, name="skyward-pipes", daemon=True).start()
        os.register_at_fork(after_in_child=_child_streams)

    def restore(self) -> None:
        """Put the original descriptors back (before exit: nobody pumps the pipes then)."""
        for fd, saved in zip((1, 2), self._saved, strict=True):
            os.dup2(saved, fd)
        sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__

    def _pump(self) -> None:
        fds = list(self._fds)
        try:
            while True:
                ready, _, _ = select.select(fds, [], [])
                with self._lock:
                    self._read(ready)
        except Exception as exc:  # a dead pump must be visible in the log
            log(f"pipe reader stopped: {exc!r}")

    def _read(self, fds: Any) -> None:
        put = self.sink.put
        for fd in fds:
            name, decoder = self._fds[fd]
            while True:
                try:
                    data = os.read(fd, 1 << 16)
                except BlockingIOError:
                    break
                text = decoder.decode(data)
                if text:
                    put((name, text))
                if not data:
                    break

    def drain(self) -> None:
        """Move what the process has written so far (any layer) into the sink."""
        if self._libc is None:
            try:
                import ctypes

                self._libc = ctypes.CDLL(None)
            except Exception:  # no libc: C buffers stay unflushed
                self._libc = False
        if self._libc:
            self._libc.fflush(None)  # C stdio of the cell's extensions
        for stream in (sys.__stdout__, sys.__stderr__):
            try:
                stream.flush()
            except Exception:  # a cell may have closed them
                pass
        with self._lock:
            self._read(list(self._fds))


def _child_streams() -> None:
    """A forked child (multiprocessing) has no flusher: write to the pipes, a line a write."""
    for fd, attr in ((1, "stdout"), (2, "stderr")):
        raw = io.BufferedWriter(io.FileIO(fd, "w", closefd=False))
        setattr(sys, attr, io.TextIOWrapper(raw, "utf-8", "replace", line_buffering=True))
