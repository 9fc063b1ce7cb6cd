"""Text in, lines out, with a terminal's carriage-return semantics: the one line engine.

Output arrives in arbitrary chunks (``print`` pieces, pipe reads, a command's output);
what a person reads is lines, and a ``\\r`` progress bar (tqdm) is one line redrawn. A
:class:`LineSink` turns ``(stream, text)`` chunks into ``(stream, line, overwrite)``
lines: ``overwrite`` means "this replaces the stream's previous line". A line not ended
yet is shown once it has waited a flush, and a bar is redrawn at most every
``PROGRESS_INTERVAL``. Standard library only: the agent uses it on instances, the
bootstrap for commands' output.
"""

from __future__ import annotations

import time
from itertools import groupby, repeat
from operator import itemgetter

__all__ = ["PROGRESS_INTERVAL", "LineSink"]

PROGRESS_INTERVAL = 0.1  # seconds between two provisional states of one line (tqdm's pace)
UNFINISHED_DELAY = 0.03  # seconds an unfinished line waits for its end before it is shown

_first = itemgetter(0)
_second = itemgetter(1)


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
    slice and slice deletion are atomic under the GIL), so writing stays cheap; whoever
    flushes calls :meth:`take`.
    """

    def __init__(self) -> None:
        self.chunks: list[tuple[str, str]] = []
        self.put = self.chunks.append
        self._streams: dict[str, _Stream] = {}
        self.deferred = False  # a provisional line waits for PROGRESS_INTERVAL to pass
        self.partial: tuple[str, ...] = ()  # streams whose last taken line is unfinished

    def take(self, end: bool = False) -> list[tuple[str, str, bool]]:
        """Lines for everything written so far; ``end`` closes open lines (a cell ended).

        Afterwards ``partial`` names the streams whose last line in the result is not
        finished: such a line comes last among its stream's lines, and a later line of
        that stream replaces it.
        """
        chunks = self.chunks
        n = len(chunks)
        items = chunks[:n]
        del chunks[:n]
        out: list[tuple[str, str, bool]] = []
        for name, group in groupby(items, _first):
            self._feed(name, "".join(map(_second, group)), out)
        now = time.monotonic()
        self.deferred = False
        partial: list[str] = []
        for name, st in self._streams.items():
            if st.buf and st.buf != st.shown:
                if st.born is None:
                    st.born = now
                # a line is shown unfinished only once it has waited a little (not while
                # print() is between its text and its "\n"), and a progress bar is redrawn
                # at most every PROGRESS_INTERVAL
                if st.open:
                    due = now - st.when >= PROGRESS_INTERVAL
                else:
                    due = now - st.born >= UNFINISHED_DELAY
                if due or end:
                    out.append((name, st.buf, st.open))
                    st.open, st.shown, st.when = True, st.buf, now
                    if not end:
                        partial.append(name)
                else:
                    self.deferred = True
            if end:
                st.buf, st.cr, st.open, st.shown, st.born = "", False, False, None, None
        self.partial = tuple(partial)
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
