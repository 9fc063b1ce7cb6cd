"""The agent: runs on an instance and executes notebook cells for the kernel.

``python -m skyward.agent --socket PATH [--node N] [--nodes M] [--cluster ID]``

It listens on a UNIX socket (reached through SSH), serves one client at a time and
outlives every connection: the namespace, the running cell and the output stay. Cells run
in the main thread, so an interrupt can raise ``KeyboardInterrupt`` in them; socket I/O,
output flushing and pipe reading run in daemon threads. Standard library only: this file
is uploaded to bare instances.

Frames (``wire``) to the agent: ``hello since``, ``exec task code filename``,
``interrupt task``, ``ping id``, ``shutdown``. From it, plain data with a ``seq`` that
grows by one per frame: ``started``, ``log task lines`` (``(stream, text, overwrite)``
tuples), ``done task ok duration result error``, ``pong``, ``bye``. The ``hello`` reply is
outside that numbering: its ``seq`` is the newest frame's (``oldest`` the oldest still
kept), and the frames after ``since`` follow it, then live ones.
"""

from __future__ import annotations

import argparse
import ast
import builtins
import linecache
import os
import signal
import socket
import sys
import threading
import time
import traceback
import types
from collections import deque
from itertools import islice
from operator import itemgetter
from queue import SimpleQueue
from typing import Any

from . import capture, remote, richout, wire
from .capture import Capture, LineSink
from .sampler import Sampler

__all__ = ["Agent", "LineSink", "main"]

FLUSH_INTERVAL = 0.01  # seconds between background log flushes
FRAME_TEXT = 1 << 20  # characters of log text per frame (a longer line gets a frame alone)
REPLAY_FRAMES = 10_000  # frames kept for reconnecting clients...
REPLAY_BYTES = 256 << 20  # ...and at most this many bytes of them
SEND_BATCH = 8 << 20  # bytes per sendall, so a long replay does not build a huge buffer
MAX_REPR = 100_000  # characters of a cell's result repr
_HERE = __file__
_first = itemgetter(0)
_second = itemgetter(1)
_log_fd = 2


def _log(message: str) -> None:
    """Agent diagnostics go to (a dup of) the original stderr, never into a cell's output."""
    line = f"{time.strftime('%H:%M:%S')} skyward.agent[{os.getpid()}] {message}\n"
    try:
        os.write(_log_fd, line.encode("utf-8", "replace"))
    except OSError:
        pass


# ---------------------------------------------------------------------------- frames


class Outbox:
    """Numbers frames, keeps a bounded replay buffer, and sends them from one thread.

    Emitting never blocks on the network: a slow or vanished client must not stall the
    cell. The sender thread writes to whichever connection said hello last.
    """

    def __init__(self, max_frames: int = REPLAY_FRAMES, max_bytes: int = REPLAY_BYTES) -> None:
        self._cond = threading.Condition()
        self._frames: deque[tuple[int, bytes]] = deque()
        self._bytes = 0
        self._max_frames, self._max_bytes = max_frames, max_bytes
        self.seq = 0
        self._conn: socket.socket | None = None
        self._cursor = 0  # last seq handed to the sender for the current connection
        self._first: bytes | None = None  # the hello reply, sent before any replay
        self._busy = False
        threading.Thread(target=self._send_loop, name="skyward-send", daemon=True).start()

    def emit(self, message: dict[str, Any], wake: bool = True) -> int:
        """Number ``message``, buffer it and (unless ``wake`` is False) wake the sender.

        A frame emitted without waking goes out with the next one, or at the flusher's
        next ``kick`` (within ``FLUSH_INTERVAL``): a cell's "started" then shares one
        packet with a quick cell's "done".
        """
        with self._cond:
            self.seq += 1
            message["seq"] = self.seq
            data = wire.encode(message)
            self._frames.append((self.seq, data))
            self._bytes += len(data)
            while len(self._frames) > self._max_frames or (
                self._bytes > self._max_bytes and len(self._frames) > 1
            ):
                self._bytes -= len(self._frames.popleft()[1])
            if wake:
                self._cond.notify_all()
            return self.seq

    def kick(self) -> None:
        """Wake the sender if frames are waiting (the flusher calls this regularly)."""
        with self._cond:
            if self._pending():
                self._cond.notify_all()

    def attach(self, conn: socket.socket, hello: dict[str, Any], since: int) -> None:
        """Make ``conn`` the client: send ``hello`` then every buffered frame after ``since``."""
        with self._cond:
            self._conn = conn
            self._cursor = max(0, min(since, self.seq))
            hello["seq"] = self.seq
            hello["oldest"] = self._frames[0][0] if self._frames else self.seq + 1
            self._first = wire.encode(hello)
            self._cond.notify_all()

    def detach(self, conn: socket.socket) -> None:
        with self._cond:
            if self._conn is conn:
                self._conn = None
                self._first = None
                self._cond.notify_all()

    def wait_sent(self, timeout: float) -> bool:
        """Wait until the current client has been sent everything (or there is none)."""
        with self._cond:
            return self._cond.wait_for(
                lambda: (
                    self._conn is None
                    or (not self._busy and self._first is None and self._cursor >= self.seq)
                ),
                timeout,
            )

    def _pending(self) -> bool:
        return self._conn is not None and (self._first is not None or self._cursor < self.seq)

    def _send_loop(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(self._pending)
                conn, batch, size = self._conn, [], 0
                if self._first is not None:
                    batch.append(self._first)
                    self._first = None
                if self._frames and self._cursor < self.seq:
                    oldest = self._frames[0][0]
                    if self._cursor + 1 < oldest:
                        _log(f"frames {self._cursor + 1}..{oldest - 1} were dropped unsent")
                        self._cursor = oldest - 1
                    for seq, data in islice(self._frames, self._cursor + 1 - oldest, None):
                        batch.append(data)
                        self._cursor = seq
                        size += len(data)
                        if size >= SEND_BATCH:
                            break
                self._busy = True
            try:
                assert conn is not None
                conn.sendall(b"".join(batch))
            except OSError as exc:
                _log(f"client lost while sending: {exc!r}")
                self.detach(conn)  # type: ignore[arg-type]
                _close(conn)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()


def _close(conn: socket.socket | None) -> None:
    if conn is None:
        return
    try:
        conn.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    conn.close()


# ---------------------------------------------------------------------------- the agent


class _CompileError(Exception):
    """Wraps an error raised while compiling a cell: it has no frames worth showing."""


class Agent:
    """Serves clients on a UNIX socket and runs their cells in the main thread."""

    def __init__(
        self,
        socket_path: str,
        node: int = 0,
        nodes: int = 1,
        cluster: str = "",
        grace: float | None = None,
        on_orphan: str = "",
    ) -> None:
        self.socket_path = socket_path
        self.grace = grace
        self.on_orphan = on_orphan
        self.last_contact = time.monotonic()
        self.node, self.nodes, self.cluster = node, nodes, cluster
        self.sink = LineSink()
        self.capture = Capture(self.sink)
        self.outbox: Outbox | None = None
        self.namespace: dict[str, Any] = {}
        self._queue: SimpleQueue[dict[str, Any] | None] = SimpleQueue()
        self._flush_lock = threading.Lock()
        self._conn_lock = threading.Lock()
        self._conn: socket.socket | None = None
        self._listener: socket.socket | None = None
        self._task: Any = None  # the running cell's task id (None between cells)
        self._interruptible = False  # user code is on the main thread's stack
        self._signal_lock = threading.Lock()  # guards the three below and the two above
        self._interrupt_pending = False  # interrupted before its code began
        self._queued: set[Any] = set()  # tasks waiting in the queue
        self._cancelled: set[Any] = set()  # ... of which interrupted before they started
        self._sigints = 0  # SIGINT handler runs, to tell whether a signal was acted on
        self._stopping = False
        self._main_ident = threading.main_thread().ident
        self._points: list[tuple[str, float, float]] = []  # metrics not yet sent
        self._points_lock = threading.Lock()

    # -- start and stop

    def start(self) -> None:
        """Bind the socket first (the bootstrap polls for it), then capture and serve."""
        self._listener = _bind(self.socket_path)
        self._inode = os.stat(self.socket_path).st_ino
        self.outbox = Outbox()
        main = types.ModuleType("__main__")
        main.__dict__["__builtins__"] = builtins
        self._agent_main = sys.modules.get("__main__")
        sys.modules["__main__"] = main  # so pickle finds classes defined in cells
        self.namespace = main.__dict__
        signal.signal(signal.SIGINT, self._on_sigint)  # `nohup ... &` leaves SIGINT ignored
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # outlive the SSH session that started us
        self.capture.install()
        remote._emit = self._record_metric
        richout.install(self._display)
        self.namespace["display"] = richout.display
        Sampler(self._record_metric).start()
        loops = [(self._accept_loop, "accept"), (self._flush_loop, "flush")]
        if self.grace:
            loops.append((self._watch_kernel, "watchdog"))
        for target, name in loops:
            threading.Thread(target=target, name=f"skyward-{name}", daemon=True).start()
        _log(f"listening on {self.socket_path} (node {self.node}/{self.nodes})")

    def serve(self) -> int:
        """Run queued cells until shutdown; returns the exit status."""
        while not self._stopping:
            try:
                message = self._queue.get()
                if message is None or self._stopping:
                    break
                self._run(message)
            except KeyboardInterrupt:
                continue  # a signal from outside while idle
            except Exception as exc:  # the agent outlives its own bugs
                _log(f"cell machinery failed: {exc!r}")
        self._cleanup()
        return 0

    def _watch_kernel(self) -> None:
        """Shut the instance down when the kernel has been silent for ``grace`` seconds.

        The kernel sends a heartbeat far more often than that; silence means the kernel
        (or its machine) is gone, and nobody is left to destroy this instance.
        """
        assert self.grace
        step = max(0.2, min(5.0, self.grace / 4))
        while not self._stopping:
            time.sleep(step)
            silent = time.monotonic() - self.last_contact
            if silent < self.grace:
                continue
            _log(f"no word from the kernel for {silent:.0f} s: shutting the instance down")
            if self.on_orphan:
                import subprocess

                subprocess.Popen(
                    self.on_orphan,
                    shell=True,
                    start_new_session=True,
                    stdin=subprocess.DEVNULL,
                    stdout=_log_fd,
                    stderr=_log_fd,
                )
            time.sleep(2.0)  # let the shutdown take us with the instance
            self._unlink()
            os._exit(0)

    def _cleanup(self) -> None:
        self._unlink()
        self.capture.restore()

    def _unlink(self) -> None:
        """Remove the socket, unless another agent has bound that path since."""
        try:
            if os.stat(self.socket_path).st_ino == self._inode:
                os.unlink(self.socket_path)
        except OSError:
            pass

    def _on_sigint(self, signum: int, frame: Any) -> None:
        self._sigints += 1
        if self._interruptible:
            raise KeyboardInterrupt

    # -- connections

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError as exc:
                if self._stopping:
                    return
                _log(f"accept failed: {exc!r}")
                time.sleep(0.1)
                continue
            with self._conn_lock:
                old, self._conn = self._conn, conn
            if old is not None:
                assert self.outbox is not None
                self.outbox.detach(old)
                _close(old)
                _log("a new client replaced the previous one")
            threading.Thread(target=self._read_loop, args=(conn,), daemon=True).start()

    def _read_loop(self, conn: socket.socket) -> None:
        decoder = wire.FrameDecoder(plain=False)
        try:
            while True:
                data = conn.recv(1 << 20)
                if not data:
                    break
                self.last_contact = time.monotonic()
                for message in decoder.feed(data):
                    self._handle(conn, message)
        except Exception as exc:  # a bad client must not take the agent down
            _log(f"client connection ended: {exc!r}")
        finally:
            assert self.outbox is not None
            self.outbox.detach(conn)
            with self._conn_lock:
                if self._conn is conn:
                    self._conn = None
            _close(conn)

    def _handle(self, conn: socket.socket, message: dict[str, Any]) -> None:
        assert self.outbox is not None
        op = message.get("op")
        if op == "exec":
            with self._signal_lock:
                self._queued.add(message.get("task"))
            self._queue.put(message)
        elif op == "hello":
            python = ".".join(map(str, sys.version_info[:3]))
            hello = dict(k="hello", pid=os.getpid(), python=python, cwd=os.getcwd())
            hello.update(node=self.node, nodes=self.nodes, cluster=self.cluster)
            hello["running"] = self._task  # a reconnecting client learns its cell still runs
            self.outbox.attach(conn, hello, int(message.get("since") or 0))
        elif op == "interrupt":
            self._interrupt(message.get("task"))
        elif op == "configure":
            os.environ.update({str(k): str(v) for k, v in (message.get("env") or {}).items()})
            remote._node = dict(message.get("node") or {})
        elif op == "ping":
            self.outbox.emit({"k": "pong", "id": message.get("id"), "time": time.time()})
        elif op == "shutdown":
            self._shutdown()
        else:
            _log(f"unknown op {op!r} ignored")

    def _interrupt(self, task: Any) -> None:
        """KeyboardInterrupt in ``task`` if it runs; a queued one fails as soon as it starts."""
        if task is None:
            return
        with self._signal_lock:
            if task == self._task:
                if self._interruptible:
                    threading.Thread(target=self._kick, args=(task,), daemon=True).start()
                else:
                    self._interrupt_pending = True  # between "started" and its code
            elif task in self._queued:
                self._cancelled.add(task)

    def _kick(self, task: Any) -> None:
        """Signal the main thread until its handler runs.

        One signal can be lost: if it lands after the interpreter's last check and before
        a blocking call (``time.sleep``) starts, that call does not see it.
        """
        seen = self._sigints
        for _ in range(200):
            with self._signal_lock:
                if self._sigints != seen or self._task != task or not self._interruptible:
                    return
                signal.pthread_kill(self._main_ident, signal.SIGINT)
            time.sleep(0.05)

    def _shutdown(self) -> None:
        """Say bye, then stop: a running cell is interrupted, queued ones are dropped."""
        assert self.outbox is not None
        _log("shutdown requested")
        self._stopping = True
        self.outbox.emit({"k": "bye"})
        self.outbox.wait_sent(2.0)
        self._unlink()
        self._interrupt(self._task)
        self._queue.put(None)
        watchdog = threading.Timer(5.0, self._force_exit)
        watchdog.daemon = True
        watchdog.start()

    def _force_exit(self) -> None:
        """The running cell swallowed the interrupt: leave without it."""
        stack = "".join(traceback.format_stack(sys._current_frames().get(self._main_ident)))
        _log(f"shutdown forced; the main thread was at:\n{stack}")
        os._exit(0)

    # -- output

    def _record_metric(self, name: str, value: float, stamp: float) -> None:
        with self._points_lock:
            self._points.append((name, value, stamp))

    def _display(self, data: dict[str, Any], metadata: dict[str, Any]) -> None:
        """A rich output of the running cell, after the lines printed before it."""
        if self.outbox is None:
            return
        with self._flush_lock:
            self._flush(end=False)
            self.outbox.emit(
                {"k": "display", "task": self._task, "data": data, "metadata": metadata}
            )

    def _send_metrics(self) -> None:
        """Send the metrics recorded since the last flush, as one frame."""
        with self._points_lock:
            points, self._points = self._points, []
        if points and self.outbox is not None:
            self.outbox.emit({"k": "metrics", "points": points})

    def _flush_loop(self) -> None:
        sink = self.sink
        while True:
            time.sleep(FLUSH_INTERVAL)
            if self.outbox is not None:
                self.outbox.kick()
            if self._points:
                try:
                    self._send_metrics()
                except Exception as exc:
                    _log(f"metrics failed: {exc!r}")
            if sink.chunks or sink.deferred:
                try:
                    with self._flush_lock:
                        self._flush(end=False)
                except Exception as exc:  # keep flushing whatever happens
                    _log(f"flush failed: {exc!r}")

    def _flush(self, end: bool) -> None:
        """Send the sink's lines as log frames of the current task (hold ``_flush_lock``)."""
        assert self.outbox is not None
        lines = self.sink.take(end)
        start, size = 0, 0
        for i, line in enumerate(lines):
            size += len(line[1]) + 16  # ~ its pickled overhead
            if size >= FRAME_TEXT:
                self.outbox.emit({"k": "log", "task": self._task, "lines": lines[start : i + 1]})
                start, size = i + 1, 0
        if start < len(lines):
            self.outbox.emit({"k": "log", "task": self._task, "lines": lines[start:]})

    # -- cells

    def _run(self, message: dict[str, Any]) -> None:
        assert self.outbox is not None
        task = message.get("task")
        code = message.get("code") or ""
        filename = message.get("filename") or f"<cell {task}>"
        self.capture.drain()
        with self._flush_lock:
            self._flush(end=True)  # earlier output belongs to no task
            with self._signal_lock:
                self._task = task
                self._queued.discard(task)
                self._interrupt_pending = task in self._cancelled
                self._cancelled.discard(task)
            self.outbox.emit({"k": "started", "task": task}, wake=False)
        began = time.perf_counter()
        extra: dict[str, Any] = {}
        push = message.get("push")
        loaded = _load_push(push, self.namespace) if push else None
        if loaded is not None:
            ok, value, error = False, None, loaded
        else:
            ok, value, error = self._execute(code, filename)
        try:
            richout.patch_ipython()
            richout.emit_figures()
        except Exception as exc:
            _log(f"figures failed: {exc!r}")
        result = None
        if ok and value is not None:
            data, _ = richout.bundle(value)
            result = data["text/plain"]
            if len(result) > MAX_REPR:
                result = data["text/plain"] = (
                    f"{result[:MAX_REPR]}... [{len(result)} characters, truncated]"
                )
            if len(data) > 1:
                extra["result_data"] = data
        if ok and message.get("pull"):
            extra.update(_pull(message["pull"], self.namespace))
        duration = time.perf_counter() - began
        self.capture.drain()
        with self._flush_lock:
            self._flush(end=True)
            self._send_metrics()
            done = dict(k="done", task=task, ok=ok, duration=duration)
            self.outbox.emit({**done, "result": result, "error": error, **extra})
            with self._signal_lock:
                self._task = None

    def _execute(self, code: str, filename: str) -> tuple[bool, Any, dict[str, Any] | None]:
        """Run one cell; the value of a trailing expression is the result."""
        try:
            body, last, is_async = self._compile(code, filename)
            try:
                with self._signal_lock:
                    self._interruptible = True
                    if self._interrupt_pending:
                        raise KeyboardInterrupt
                if is_async:
                    value = _run_async(body, last, self.namespace)
                else:
                    exec(body, self.namespace)
                    value = None if last is None else eval(last, self.namespace)
            finally:
                self._interruptible = False
        except BaseException as exc:  # SystemExit too: the agent stays
            self._interruptible = False
            return False, None, _describe(exc, filename)
        return True, value, None

    def _compile(self, code: str, filename: str) -> tuple[Any, Any, bool]:
        lines = code.splitlines(keepends=True)
        if lines and not lines[-1].endswith("\n"):
            lines[-1] += "\n"
        linecache.cache[filename] = (len(code), None, lines, filename)
        flags = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
        try:
            tree = ast.parse(code, filename, "exec")
            last = None
            if tree.body and isinstance(tree.body[-1], ast.Expr):
                expr = ast.Expression(tree.body.pop().value)
                last = compile(expr, filename, "eval", flags=flags, dont_inherit=True)
            body = compile(tree, filename, "exec", flags=flags, dont_inherit=True)
        except Exception as exc:
            raise _CompileError() from exc
        co_coroutine = 0x80  # inspect.CO_COROUTINE, without importing inspect
        is_async = any(c is not None and c.co_flags & co_coroutine for c in (body, last))
        return body, last, is_async


def _run_async(body: Any, last: Any, namespace: dict[str, Any]) -> Any:
    """A cell with top-level await: both parts run on one event loop."""
    import asyncio

    with asyncio.Runner() as runner:
        step = eval(body, namespace)
        if asyncio.iscoroutine(step):
            runner.run(step)
        value = None if last is None else eval(last, namespace)
        return runner.run(value) if asyncio.iscoroutine(value) else value


def _describe(exc: BaseException, filename: str) -> dict[str, Any]:
    """The error of a cell, its traceback starting in the cell (no agent or asyncio frames)."""
    if isinstance(exc, _CompileError) and exc.__cause__ is not None:
        exc, tb = exc.__cause__, None
    else:
        tb = exc.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename == _HERE:
            tb = tb.tb_next
        cell = tb
        while cell is not None and cell.tb_frame.f_code.co_filename != filename:
            cell = cell.tb_next
        tb = cell or tb
    exc.__traceback__ = tb
    try:
        evalue = str(exc)
    except Exception:  # a broken __str__ must not lose the error
        evalue = f"<unprintable {type(exc).__qualname__}>"
    try:
        lines = traceback.format_exception(type(exc), exc, tb)
    except Exception:
        lines = [f"{type(exc).__qualname__}: {evalue}\n"]
    described: dict[str, Any] = {"ename": type(exc).__qualname__, "evalue": evalue}
    described["traceback"] = lines
    described["module"] = type(exc).__module__
    try:  # so the kernel can raise the same type, where it can load it
        import cloudpickle

        exc.__traceback__ = None
        described["pickled"] = cloudpickle.dumps(exc)
    except Exception:
        pass
    return described


def _load_push(push: dict[str, bytes], namespace: dict[str, Any]) -> dict[str, Any] | None:
    """Put the variables the kernel sent into the namespace; an error dict if one fails."""
    for name, blob in push.items():
        try:
            import cloudpickle

            namespace[name] = cloudpickle.loads(blob)
        except BaseException as exc:
            error = _describe(exc, "<push>")
            error["evalue"] = f"could not load variable '{name}' sent from the kernel: {exc}"
            return error
    return None


def _pull(names: list[str], namespace: dict[str, Any]) -> dict[str, Any]:
    """The values of ``names`` pickled for the kernel, or why they cannot be."""
    missing = [n for n in names if n not in namespace]
    if missing:
        return {"pull_error": f"not defined on this node: {', '.join(missing)}"}
    try:
        import cloudpickle

        return {"pulled": cloudpickle.dumps({n: namespace[n] for n in names})}
    except Exception as exc:
        return {"pull_error": f"cannot pickle {', '.join(names)}: {type(exc).__name__}: {exc}"}


def _bind(path: str) -> socket.socket:
    """Listen on ``path``, owner-only; a socket left by an earlier agent is replaced.

    The socket is bound under a temporary name and renamed into place once it listens,
    so whoever polls for ``path`` can connect as soon as it exists. Names are bound
    relative to their folder (no other thread runs yet), as a deep home can make the full
    path longer than the 108 bytes a socket address holds.
    """
    folder, name = os.path.split(os.path.abspath(path))
    os.makedirs(folder, mode=0o700, exist_ok=True)
    temporary = f".{name}.{os.getpid()}"
    cwd = os.getcwd()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    umask = os.umask(0o177)
    os.chdir(folder)
    try:
        if os.path.lexists(temporary):
            os.unlink(temporary)
        listener.bind(temporary)
        os.chmod(temporary, 0o600)
        listener.listen(8)
        os.replace(temporary, name)
    finally:
        os.chdir(cwd)
        os.umask(umask)
    return listener


def main(argv: list[str] | None = None) -> int:
    """Command line entry: set the node's environment, bind, serve until shutdown."""
    global _log_fd
    parser = argparse.ArgumentParser(prog="python -m skyward.agent", description=__doc__)
    parser.add_argument("--socket", required=True, help="UNIX socket path to listen on")
    parser.add_argument("--node", type=int, default=0, help="this node's index")
    parser.add_argument("--nodes", type=int, default=1, help="number of nodes in the cluster")
    parser.add_argument("--cluster", default="", help="the cluster's id")
    parser.add_argument(
        "--grace",
        type=float,
        default=None,
        help="seconds without a word from the kernel before the instance shuts itself down",
    )
    parser.add_argument(
        "--on-orphan", default="", help="shell command that shuts this instance down"
    )
    args = parser.parse_args(argv)
    os.environ["SKYWARD_NODE"] = str(args.node)
    os.environ["SKYWARD_NODES"] = str(args.nodes)
    os.environ["SKYWARD_CLUSTER"] = args.cluster
    os.environ.setdefault("MPLBACKEND", "Agg")  # figures are sent as PNG after each cell
    _log_fd = os.dup(2)
    capture.log = _log  # the pipe reader reports to the agent's log, not a cell
    try:  # input() in a cell gets EOF instead of hanging on a terminal nobody watches
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
    except OSError:
        pass
    agent = Agent(args.socket, args.node, args.nodes, args.cluster, args.grace, args.on_orphan)
    agent.start()
    return agent.serve()


if __name__ == "__main__":
    _status = main()
    os._exit(_status)  # user threads left by cells must not keep the agent alive
