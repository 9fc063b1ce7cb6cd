"""The supervisor: what the kernel talks to on an instance, and the keeper of its worker.

``python -m skyward.agent --socket PATH [--node N] [--nodes M] [--cluster ID] [--grace S]``

It serves the kernel on a UNIX socket (reached through SSH), one client at a time, and
outlives every connection and every crash of user code: frames are numbered and kept
for replay, a heartbeat keeps it from shutting the instance down, and the worker (the
process that runs cells with IPython) is started, watched and restarted here. When the
worker dies the kernel hears within a moment how (exit status, signal, OOM) with every
byte it wrote before. Standard library only.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque

from .. import protocol, wire
from ..lines import LineSink
from ..protocol import Crash, Done, Lines, Message, Started
from .blob_service import BlobService
from .budget import OutputBudget
from .listener import bind
from .outbox import Outbox, close, log
from .process import WorkerProcess, describe_exit
from .sampler import Sampler
from .watchdog import watch_kernel

__all__ = ["Supervisor"]

FLUSH_INTERVAL = 0.01  # seconds between background log flushes
FRAME_TEXT = 1 << 20  # characters of log text per frame (a longer line gets a frame alone)
QUICK_DEATH = 2.0  # a worker that dies this soon after starting, twice, is not restarted


class Supervisor:
    """Serves clients, forwards cells to the worker, numbers what comes back."""

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
        self.node, self.nodes, self.cluster = node, nodes, cluster
        self.grace = grace
        self.on_orphan = on_orphan
        self.last_contact = time.monotonic()
        self.sink = LineSink()
        self.outbox = Outbox()
        self.worker: WorkerProcess | None = None
        self.worker_state = "starting"
        self._configure: protocol.Configure | None = None
        self._refresh: protocol.Refresh | None = None  # the cwd, for a restarted worker
        self._flush_lock = threading.RLock()
        self._conn: socket.socket | None = None
        self._conn_lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._inode = 0
        self.task: str | None = None  # the cell running on the worker
        self._last_task: str | None = None
        self._sent: list[str] = []  # the cell handed to the worker and not done yet
        self._held: deque[Message] = deque()  # what waits for the worker to be free
        self._interrupted: set[str] = set()  # held cells to stop as soon as they start
        self._budgets: dict[str, int] = {}
        self.budget = OutputBudget()
        self._points: list[tuple[str, float, float]] = []
        self._quick_deaths = 0
        self.stopping = False
        self.blobs = BlobService(self._emit)

    # -- start and stop

    def start(self) -> None:
        """Bind the socket first (the bootstrap polls for it), then start the worker."""
        self._listener = bind(self.socket_path)
        self._inode = os.stat(self.socket_path).st_ino
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # outlive the SSH session that started us
        self._start_worker()
        Sampler(self._record_metric).start()
        loops = [(self._accept_loop, "accept"), (self._flush_loop, "flush")]
        if self.grace:
            loops.append((lambda: watch_kernel(self), "watchdog"))
        for target, name in loops:
            threading.Thread(target=target, name=f"skyward-{name}", daemon=True).start()
        log(f"listening on {self.socket_path} (node {self.node}/{self.nodes})")

    def _start_worker(self) -> None:
        self.worker_state = "starting"
        self.worker = WorkerProcess(self._on_worker_message, self._on_output, self._on_exit)
        if self._configure is not None:
            self.worker.send(self._configure)
        if self._refresh is not None:
            self.worker.send(self._refresh)

    def wait(self) -> int:
        """Block until shutdown (and the worker's end, 5 s at most); the exit status."""
        while not self.stopping:
            time.sleep(0.2)
        worker = self.worker
        if worker is not None:
            try:
                worker.process.wait(5.0)
            except subprocess.TimeoutExpired:
                log("the worker did not stop: killing it")
            worker.kill()
        return 0

    def unlink(self) -> None:
        """Remove the socket, unless another agent has bound that path since."""
        try:
            if os.stat(self.socket_path).st_ino == self._inode:
                os.unlink(self.socket_path)
        except OSError:
            pass

    def _shutdown(self) -> None:
        """Say bye, then stop: a running cell is interrupted, the worker ends."""
        log("shutdown requested")
        self.outbox.emit(protocol.encode(protocol.Bye()))
        self.outbox.wait_sent(2.0)
        self.unlink()
        worker = self.worker
        self.stopping = True
        with self._flush_lock:
            self._held.clear()  # cells not begun never will
        if worker is not None:
            if self.task is not None:
                worker.send(protocol.Interrupt(self.task))
            worker.send(protocol.Shutdown())

    # -- connections

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError as exc:
                if self.stopping:
                    return
                log(f"accept failed: {exc!r}")
                time.sleep(0.1)
                continue
            with self._conn_lock:
                old, self._conn = self._conn, conn
            if old is not None:
                self.outbox.detach(old)
                close(old)
                log("a new client replaced the previous one")
            threading.Thread(target=self._read_loop, args=(conn,), daemon=True).start()

    def _read_loop(self, conn: socket.socket) -> None:
        decoder = wire.FrameDecoder(plain=True)
        piece: protocol.Put | None = None  # a blob piece whose raw bytes are arriving
        received = 0
        try:
            while True:
                data = conn.recv(1 << 20)
                if not data:
                    break
                self.last_contact = time.monotonic()
                while data:
                    if piece is not None:
                        take = memoryview(data)[: piece.raw - received]
                        self.blobs.put(piece, received, take)
                        received += len(take)
                        data = data[len(take) :] if len(take) < len(data) else b""
                        if received == piece.raw:
                            piece = None
                        continue
                    frames, data = decoder.feed_until_raw(data)
                    for frame in frames:
                        message = protocol.decode(frame)
                        if isinstance(message, protocol.Put):
                            piece, received = message, 0
                        else:
                            self._handle(conn, message)
        except Exception as exc:  # a bad client must not take the agent down
            log(f"client connection ended: {exc!r}")
        finally:
            with self._conn_lock:
                if self._conn is conn:
                    self._conn = None
            self.outbox.detach(conn)
            close(conn)

    def _handle(self, conn: socket.socket, message: Message) -> None:
        worker = self.worker
        match message:
            case protocol.Run(task=task, max_output=budget):
                message = self.blobs.resolve(message)
                if message is None:
                    return
                if worker is None:
                    self.blobs.release(task)
                    self._emit(Crash(task, 0, detail=self.worker_state, restarted=False))
                    return
                self._budgets[task] = budget
                with self._flush_lock:
                    self._held.append(message)
                    self._hand_over()
            case protocol.Interrupt(task=task):
                with self._flush_lock:
                    if task in self._held_cells():
                        self._interrupted.add(task)
                    elif worker is not None and (task == self.task or task in self._sent):
                        worker.send(message)
            case protocol.Kill(task=task):
                known = task == self.task or task in self._sent or task in self._held_cells()
                if worker is not None and known:
                    log(f"killing the worker: cell {task} did not stop")
                    worker.kill()
            case protocol.Hello(since=since):
                hello = protocol.HelloReply(
                    os.getpid(),
                    ".".join(map(str, sys.version_info[:3])),
                    os.getcwd(),
                    self.node,
                    self.nodes,
                    self.cluster,
                    running=self.task,
                    worker=self.worker_state,
                )
                self.outbox.attach(conn, protocol.encode(hello), since)
            case protocol.Configure():
                if self._configure is not None:  # a later kernel may not know every value
                    env = {**self._configure.env, **message.env}
                    message = dataclasses.replace(message, env=env)
                self._configure = message
                with self._flush_lock:
                    self._held.append(message)
                    self._hand_over()
            case protocol.Refresh():
                self._refresh = dataclasses.replace(message, changed=())
                with self._flush_lock:
                    self._held.append(message)
                    self._hand_over()
            case protocol.Fetch():
                self.blobs.fetch(message)
            case protocol.Place():
                self.blobs.place(message)
            case protocol.Serve(host=host, token=token):
                self.blobs.serve(host, token)
            case protocol.Ping(id=ident):
                self.outbox.emit(protocol.encode(protocol.Pong(ident, time.time())))
            case protocol.Shutdown():
                self._shutdown()
            case _:
                log(f"unexpected {message.kind!r} from the kernel ignored")

    # -- what the worker says

    def _emit(self, message: Message, wake: bool = True) -> None:
        self.outbox.emit(protocol.encode(message), wake)

    def _on_output(self, stream: str, text: str) -> None:
        """Bytes the worker wrote to its file descriptors 1 and 2."""
        self.sink.put((stream, text))

    def _on_worker_message(self, message: Message) -> None:
        match message:
            case protocol.Stream(chunks=chunks):
                self.sink.chunks.extend(chunks)
                worker = self.worker
                if worker is not None:
                    for name, text in chunks:
                        if name == "stderr":
                            worker.note_stderr(text)
            case protocol.Metrics(points=points):
                self._points.extend(points)
            case Done(task=task):
                if self.worker is not None:
                    self.worker.drain()
                with self._flush_lock:
                    self._finish_cell()
                    self._emit(dataclasses.replace(message, dropped=self.budget.dropped))
                    self._close_cell(task)
                    self._hand_over()
            case protocol.WorkerReady():
                if self.worker is not None:
                    self.worker.ready = True
                self.worker_state = "ready"
                self._quick_deaths = 0
                self._emit(message)
                with self._flush_lock:
                    self._hand_over()
            case _:  # displays, results, clears: after the lines printed before them
                with self._flush_lock:
                    self._flush(end=False)
                    self._emit(message)

    def _held_cells(self) -> list[str]:
        return [m.task for m in self._held if isinstance(m, protocol.Run)]

    def _hand_over(self) -> None:
        """Give the worker what waits, in order, while it is free: settings at once, one
        cell at a time (the next when it is done). Its main thread then reads the pipe
        itself: a cell costs no thread hop there (hold ``_flush_lock``)."""
        worker = self.worker
        while self._held and self.task is None and worker is not None and worker.ready:
            message = self._held.popleft()
            if isinstance(message, protocol.Run):
                self._sent.append(message.task)
                self._advance()  # before the worker has it: its output is the cell's
                if message.task in self._interrupted:  # it goes with its interrupt
                    self._interrupted.discard(message.task)
                    message = dataclasses.replace(message, interrupted=True)
            if not worker.send(message):
                return  # it died: its end reports the cell
            if isinstance(message, protocol.Run):
                worker.watch_memory()

    def _advance(self) -> None:
        """Start the first cell handed to the worker once the worker is free (hold
        ``_flush_lock``).

        The worker runs its cells in the order it gets them, so the supervisor knows
        when one begins without being told: the output before that moment (read out of
        the pipes first) belongs to no cell, and everything after it to this one, even
        output of a subprocess that reaches its pipe before any message of the worker.
        """
        worker = self.worker
        if self.task is not None or not self._sent or worker is None or not worker.ready:
            return
        task = self._sent[0]
        worker.drain()
        self._flush(end=True)
        self.task = task
        self.budget.start(self._budgets.pop(task, 10_000_000))
        self._emit(Started(task), wake=False)  # it goes with the next frame, or the flush

    def _finish_cell(self) -> None:
        self._flush(end=True)
        self._send_metrics()
        if self.budget.tail:
            self._emit(Lines(self.task, self.budget.take_tail(), panel_only=True))

    def _close_cell(self, task: str | None) -> None:
        if task in self._sent:
            self._sent.remove(task)
        self.blobs.release(task)
        self._last_task = task
        self.task = None

    def _on_exit(self, worker: WorkerProcess) -> None:
        """The worker died: report it (with everything it wrote), then start a fresh one."""
        if self.stopping:
            return
        oom = worker.oom_killed()
        status, number, words = describe_exit(worker.returncode, oom, worker.killed)
        quick = time.monotonic() - worker.started_at < QUICK_DEATH and not worker.killed
        self._quick_deaths = self._quick_deaths + 1 if quick else 0
        restart = self._quick_deaths < 2
        name = signal.Signals(number).name if number in signal.Signals._value2member_map_ else ""
        tail = worker.stderr_text()
        log(f"worker {worker.pid} ended: {words}")
        worker.close()
        with self._flush_lock:
            running = self.task
            self._finish_cell()
            queued = [t for t in self._sent if t != running] + self._held_cells()
            self._sent.clear()
            self._held.clear()
            self._interrupted.clear()
            if restart:
                self._start_worker()  # before the kernel hears: its next cell finds it
            else:
                self.worker = None
                failed = f"failed: {words}" + (f": {tail.strip()[-500:]}" if tail else "")
                self.worker_state = failed
            affected: list[str | None] = [running, *queued] if running else queued
            for task in affected or [None]:
                detail = words if task == running else f"{words} before the cell started"
                crash = Crash(
                    task,
                    worker.pid,
                    status,
                    number,
                    name,
                    oom,
                    worker.killed,
                    detail,
                    tail,
                    restart,
                )
                self._emit(crash)
                self._close_cell(task)

    # -- lines and metrics

    def _record_metric(self, name: str, value: float, stamp: float) -> None:
        self._points.append((name, value, stamp))

    def _send_metrics(self) -> None:
        if self._points:
            points, self._points = self._points, []
            self._emit(protocol.Metrics(points))

    def _flush_loop(self) -> None:
        sink = self.sink
        while True:
            time.sleep(FLUSH_INTERVAL)
            self.outbox.kick()
            try:
                if self._points:
                    self._send_metrics()
                if sink.chunks or sink.deferred:
                    with self._flush_lock:
                        self._flush(end=False)
            except Exception as exc:  # keep flushing whatever happens
                log(f"flush failed: {exc!r}")

    def _flush(self, end: bool) -> None:
        """Send the sink's lines as frames of the current cell (hold ``_flush_lock``)."""
        lines = self.sink.take(end)
        if not lines:
            return
        partial = self.sink.partial
        task = self.task
        after = None if task is not None else self._last_task
        if task is not None:
            lines = self.budget.cut(lines)
        start, size = 0, 0
        for i, line in enumerate(lines):
            size += len(line[1]) + 16  # ~ its pickled overhead
            if size >= FRAME_TEXT:
                self._emit(Lines(task, lines[start : i + 1], after=after))
                start, size = i + 1, 0
        if start < len(lines):
            self._emit(Lines(task, lines[start:], partial, after))
