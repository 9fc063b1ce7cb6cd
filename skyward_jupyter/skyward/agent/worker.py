"""The worker: the process on a node that holds the namespace and runs cells with IPython.

``python -m skyward.agent.worker --commands FD --control FD --events FD``, started by the
supervisor, which hands it one cell at a time: the main thread reads cells and settings
from the command pipe itself, a control thread reads interrupts from their own pipe.
A cell is run by IPython's own ``InteractiveShell`` (core only: no kernel, no ZMQ), so it
has a local cell's semantics by construction: ``;``, ``Out``/``_``, pretty printing,
magics, ``!cmd``, ``display()``, ``matplotlib-inline`` figures, IPython's tracebacks.
What IPython would send to a frontend goes to the supervisor instead, as messages of
``skyward.protocol``: the display publisher, the display hook and the standard streams are
the only seams.

Messages are written by whichever thread produces them, under one lock; a
``KeyboardInterrupt`` that arrives while the main thread holds it is raised when it lets
go, so a message is never cut in half.
"""

from __future__ import annotations

import argparse
import base64
import builtins
import os
import signal
import sys
import threading
import time
import traceback
from contextlib import contextmanager
from typing import Any

from .. import protocol, remote, wire
from ..protocol import Clear, Configure, Display, Done, ErrorInfo, Result, Run
from .code import refresh
from .history import OutputHistory, join_runs
from .streams import Writer, child_streams, flush_c_streams
from .variables import load_blob, pull

__all__ = ["Worker", "main"]

FLUSH_INTERVAL = 0.01  # seconds between two sends of what the cell printed


def _plain(value: Any) -> Any:
    """Plain data only (the kernel refuses classes): bytes as base64 text, others as str."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


class Worker:
    """Runs cells from the command pipe; writes messages to the event pipe."""

    def __init__(self, commands: int, control: int, events: int) -> None:
        self._commands = commands
        self._control = control
        self._events = events
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self.chunks: list[tuple[str, str]] = []
        self._held: tuple[str, str] | None = None
        self._points: list[tuple[str, float, float]] = []
        self._state = threading.Lock()  # guards the fields below
        self.task: str | None = None
        self._interruptible = False
        self._critical = 0
        self._deferred = False
        self._interrupt_pending = False
        self._cancelled: set[str] = set()
        self._sigints = 0
        self._main = threading.main_thread().ident
        self.last_traceback: list[str] | None = None
        self.shell: Any = None
        self.history = OutputHistory(lambda: self.shell.history_manager.outputs)

    # -- messages out

    def send(self, message: protocol.Message) -> None:
        """Send ``message`` after everything printed before it (one write for both)."""
        with self._critical_section():
            parts = self._pending()
            parts.append(wire.encode(protocol.encode(message)))
            self._write(b"".join(parts))

    def flush_streams(self) -> None:
        """Send what was printed so far, now (``sys.stdout.flush()``)."""
        if os.getpid() != self._pid:
            return
        with self._critical_section():
            self._send_pending()

    def _send_pending(self, hold: bool = False) -> None:
        parts = self._pending(hold)
        if parts:
            self._write(b"".join(parts))

    def _pending(self, hold: bool = False) -> list[bytes]:
        """The frames of what waits: the chunks printed so far (``hold`` keeps back a last
        chunk with no newline once: ``print`` writes its text and its newline apart),
        then ``skyward.metric()`` points."""
        parts: list[bytes] = []
        chunks = self.chunks
        if chunks:
            n = len(chunks)
            last = chunks[n - 1]
            if hold and last is not self._held and not last[1].endswith("\n"):
                self._held = last  # kept once; still last at the next flush, it goes
                n -= 1
            else:
                self._held = None
            items = chunks[:n]
            del chunks[:n]
            if items:
                # print() writes its text and its newline apart: one string per run of
                # a stream, not two tuples per line, is what crosses the pipe
                joined = join_runs(items)
                self.history.taken(items, joined)
                parts.append(wire.encode(protocol.encode(protocol.Stream(joined))))
        if self._points:
            points, self._points = self._points, []
            parts.append(wire.encode(protocol.encode(protocol.Metrics(points))))
        return parts

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self._events, view)
            view = view[written:]

    @contextmanager
    def _critical_section(self) -> Any:
        """Hold the lock; an interrupt that arrives meanwhile is raised afterwards."""
        if os.getpid() != self._pid:  # a forked child must not write into our pipe
            raise RuntimeError("skyward: display from a forked child is not supported")
        main = threading.get_ident() == self._main
        if main:
            self._critical += 1
        try:
            with self._lock:
                yield
        finally:
            if main:
                self._critical -= 1
                if self._deferred and not self._critical and self._interruptible:
                    self._deferred = False
                    raise KeyboardInterrupt

    def _flush_loop(self) -> None:
        while True:
            time.sleep(FLUSH_INTERVAL)
            if self.chunks or self._points:
                try:
                    with self._lock:
                        self._send_pending(hold=True)
                except OSError:
                    os._exit(1)  # the supervisor is gone

    def record_output(self, count: int | None) -> None:
        """Keep what is printed from now on in IPython's output history as cell ``count``'s
        (None: the cell ended)."""
        with self._critical_section():
            if count is None:
                self.history.stop(self.chunks)
            else:
                self.history.start(count, self.chunks)

    def note_output(self) -> None:
        """Record what waits unsent in the history now (a result is about to enter it)."""
        with self._critical_section():
            self.history.note(self.chunks)

    def record_metric(self, name: str, value: float, stamp: float) -> None:
        """``skyward.metric()`` in a cell: sent with the next flush."""
        self._points.append((name, value, stamp))

    # -- commands in

    def _control_loop(self) -> None:
        for frame in wire.read_frames(self._control, 1 << 16):
            message = protocol.decode(frame)
            if isinstance(message, protocol.Interrupt):
                self._interrupt(message.task)
        os._exit(0)  # the supervisor closed our pipe: it is gone or stopping

    def _interrupt(self, task: str) -> None:
        with self._state:
            if task == self.task:
                if self._interruptible:
                    threading.Thread(target=self._kick, args=(task,), daemon=True).start()
                else:
                    self._interrupt_pending = True
            else:  # handed over, and its frame not read yet: it stops as it starts
                if len(self._cancelled) > 100:  # ones that ended before their interrupt
                    self._cancelled.clear()
                self._cancelled.add(task)

    def _kick(self, task: str) -> None:
        """Signal the main thread until its handler runs (one signal can be lost when it
        lands just before a blocking call starts)."""
        seen = self._sigints
        for _ in range(200):
            with self._state:
                if self._sigints != seen or self.task != task or not self._interruptible:
                    return
                signal.pthread_kill(self._main, signal.SIGINT)  # type: ignore[arg-type]
            time.sleep(0.05)

    def _on_sigint(self, signum: int, frame: Any) -> None:
        self._sigints += 1
        if not self._interruptible:
            return
        if self._critical:
            self._deferred = True
            return
        raise KeyboardInterrupt

    # -- cells

    def serve(self) -> None:
        """Start the shell, say ready, then run what the command pipe sends (read here, on
        the main thread: a cell reaches IPython with no thread in between) until a
        ``Shutdown``, or until the supervisor closes the pipe (it is gone or stopping)."""
        from .shell import make_shell

        self.shell = make_shell(self)
        signal.signal(signal.SIGINT, self._on_sigint)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        for target in (self._control_loop, self._flush_loop):
            threading.Thread(target=target, daemon=True).start()
        import IPython

        self.send(protocol.WorkerReady(os.getpid(), IPython.__version__))
        for frame in wire.read_frames(self._commands):
            message = protocol.decode(frame)
            if isinstance(message, protocol.Shutdown):
                return
            try:
                if isinstance(message, Run):
                    self._run(message)
                elif isinstance(message, Configure):
                    self._configure(message)
                elif isinstance(message, protocol.Refresh):
                    refresh(message)
            except KeyboardInterrupt:
                continue  # an interrupt that arrived after its cell ended

    def _configure(self, message: Configure) -> None:
        os.environ.update({str(k): str(v) for k, v in message.env.items()})
        remote._node = dict(message.node)
        if message.colors:
            try:
                self.shell.colors = message.colors
            except Exception:
                pass

    def _run(self, message: Run) -> None:
        task = message.task
        with self._state:
            self.task = task
            self._interrupt_pending = message.interrupted or task in self._cancelled
            self._cancelled.discard(task)
        began = time.perf_counter()
        error = self._load_push(message.push) if message.push else None
        if error is None:
            error = self._execute(message)
        pulled = pull_error = None
        if error is None and message.pull:
            pulled, pull_error = self._pull(message.pull)
        flush_c_streams()
        done = Done(task, error is None, time.perf_counter() - began, error, pulled, pull_error)
        self.send(done)
        with self._state:
            self.task = None

    def _execute(self, message: Run) -> ErrorInfo | None:
        shell = self.shell
        if message.count:
            shell.execution_count = message.count
        self.last_traceback = None
        result = None
        try:
            with self._state:
                self._interruptible = True
                pending = self._interrupt_pending
            if pending:
                raise KeyboardInterrupt
            result = shell.run_cell(message.code, store_history=True)
        except KeyboardInterrupt:  # before the cell's code, or inside IPython itself
            self._interruptible = False
            shell.showtraceback()
            return self._describe(sys.exc_info()[1])
        finally:
            self._interruptible = False
            self._deferred = False
        exc = result.error_before_exec or result.error_in_exec
        return None if exc is None else self._describe(exc)

    def _describe(self, exc: BaseException | None) -> ErrorInfo:
        """The exception as plain data, with IPython's own rendering of it."""
        kind = type(exc)
        name = kind.__name__
        try:
            evalue = str(exc)
        except Exception:  # a broken __str__ must not lose the error
            evalue = f"<unprintable {name}>"
        stb = self.last_traceback
        if stb is None:
            stb = traceback.format_exception_only(kind, exc)
        frames = [
            (f.filename, f.lineno or 0, f.name, f.line or "")
            for f in traceback.extract_tb(exc.__traceback__ if exc is not None else None)
            if not f.filename.startswith((_IPYTHON_DIR, _AGENT_DIR))
        ]
        builtin = kind.__module__ == "builtins" and getattr(builtins, name, None) is kind
        pickled = None
        try:
            import cloudpickle

            pickled = cloudpickle.dumps(exc.with_traceback(None))  # type: ignore[union-attr]
        except Exception:
            pass
        return ErrorInfo(name, evalue, list(stb), frames, kind.__module__, builtin, pickled)

    def _load_push(self, push: dict[str, Any]) -> ErrorInfo | None:
        import cloudpickle

        namespace = self.shell.user_ns
        for name, blob in push.items():
            try:
                namespace[name] = (
                    load_blob(blob["path"], blob["parts"])
                    if isinstance(blob, dict)
                    else cloudpickle.loads(blob)
                )
            except BaseException as exc:
                info = self._describe(exc)
                text = f"could not load variable '{name}' sent from the kernel: {exc}"
                return ErrorInfo(info.ename, text, [f"{info.ename}: {text}\n"], module=info.module)
        return None

    def _pull(self, names: tuple[str, ...]) -> tuple[bytes | None, str | None]:
        return pull(self.shell.user_ns, names)

    # -- what IPython publishes

    def display(self, data: dict, metadata: dict | None, transient: dict | None, update: bool):
        """A display from the publisher (``display()``, a figure)."""
        self.send(
            Display(
                self.task, _plain(data), _plain(metadata or {}), _plain(transient or {}), update
            )
        )

    def clear(self, wait: bool) -> None:
        self.send(Clear(self.task, wait))

    def result(self, count: int, data: dict, metadata: dict) -> None:
        """The cell's value, from the display hook."""
        if self.task is not None:
            self.send(Result(self.task, count, _plain(data), _plain(metadata)))


_IPYTHON_DIR = ""
_AGENT_DIR = os.path.dirname(os.path.abspath(__file__))


def main(argv: list[str] | None = None) -> int:
    """Command line entry (the supervisor starts it)."""
    global _IPYTHON_DIR
    parser = argparse.ArgumentParser(prog="python -m skyward.agent.worker")
    parser.add_argument("--commands", type=int, required=True, help="fd to read commands from")
    parser.add_argument("--control", type=int, required=True, help="fd to read interrupts from")
    parser.add_argument("--events", type=int, required=True, help="fd to write messages to")
    args = parser.parse_args(argv)
    for fd in (args.commands, args.control, args.events):
        os.set_inheritable(fd, False)  # a cell's subprocesses must not hold our pipes
    worker = Worker(args.commands, args.control, args.events)
    sys.stdout = Writer("stdout", 1, worker.chunks.append, worker.flush_streams)
    sys.stderr = Writer("stderr", 2, worker.chunks.append, worker.flush_streams)
    os.register_at_fork(after_in_child=child_streams)
    remote._emit = worker.record_metric
    import IPython

    _IPYTHON_DIR = os.path.dirname(IPython.__file__)
    worker.serve()
    return 0


if __name__ == "__main__":
    _status = main()
    os._exit(_status)  # threads a cell left behind must not keep the worker alive
