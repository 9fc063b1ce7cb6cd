"""The kernel's side of the agent protocol: one client per node, over an SSH channel.

It sends cells and interrupts, and turns the supervisor's numbered frames into facts on
the bus: ``TaskStarted``, ``Log`` lines, ``TaskCompleted``, and the cell's outputs. It
remembers the last frame seen, so a reconnect asks the agent to resend only what was
missed.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from typing import Any

from .. import protocol, wire
from ..core.bus import EventBus
from ..core.outputs import Clear, Display, LogLines, Result, WorkerCrashed
from ..errors import AgentError
from ..events import Log, Metric, NodeInstance, TaskCompleted, TaskStarted
from ..payload import Payload
from ..protocol import Crash, Done, Missing

__all__ = ["AgentClient", "Answer", "PUT_PIECE"]

PUT_PIECE = 4 << 20  # bytes of a blob per frame: control frames wait behind one at most

_PINGS = itertools.count(1)  # ping ids: unique, as heartbeats and callers ping at once

Answer = Done | Crash | Missing
"""How a cell ended on a node: it ran (``Done``), its worker died (``Crash``), or it did
not start for lack of pushed blobs (``Missing``: send them and run it again)."""


class AgentClient:
    """Talks to the supervisor of one node through a unix-socket channel of its SSH
    connection."""

    def __init__(self, bus: EventBus, node: NodeInstance, connection: Any, socket_path: str):
        self.bus = bus
        self.node = node
        self.connection = connection
        self.socket_path = socket_path
        self.last_seq = 0
        self.agent_pid: int | None = None
        self.worker_pid: int | None = None
        self.worker_state = "starting"
        self._worker_ready: asyncio.Future[None] | None = None
        self._writer: Any = None
        self._reader_task: asyncio.Task[None] | None = None
        self._pending: dict[str, asyncio.Future[Answer]] = {}
        self._names: dict[str, str] = {}
        self._pings: dict[int, asyncio.Future[float]] = {}
        self._closed = False
        self.connected = False
        self.blobs: set[str] = set()
        """Keys of the blobs this node holds, as far as this kernel knows (a node that
        lost one answers a cell with ``Missing``)."""
        self.reaches_head = True
        """False once a fetch from the head node failed: blobs come straight from here."""
        self.bytes_sent = 0
        """Bytes written to the agent's channel (frames and blob pieces)."""
        self._stored: dict[str, asyncio.Future[protocol.Stored]] = {}
        self._serving: asyncio.Future[protocol.Serving] | None = None
        self.on_lost: Callable[[AgentClient, str], None] | None = None
        """Called when the channel drops without our asking; pending cells then wait
        (for a reconnect, or for ``fail``) instead of failing at once."""

    async def open(self, timeout: float = 15.0) -> protocol.HelloReply:
        """Open the channel (waiting for the agent's socket to appear) and say hello."""
        deadline = time.monotonic() + timeout
        delay = 0.01
        while True:
            try:
                reader, writer = await self.connection.open_unix_connection(self.socket_path)
                break
            except Exception as exc:
                if time.monotonic() + delay > deadline:
                    raise AgentError(
                        f"node {self.node.node}: agent socket {self.socket_path} not "
                        f"reachable within {timeout:.0f} s ({exc})"
                    ) from exc
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.5)
        self._writer = writer
        decoder = wire.FrameDecoder(plain=True)
        writer.write(wire.encode(protocol.encode(protocol.Hello(self.last_seq))))
        frames: list[dict[str, Any]] = []
        while not frames:
            data = await asyncio.wait_for(
                reader.read(1 << 16), max(1.0, deadline - time.monotonic())
            )
            if not data:
                raise AgentError(f"node {self.node.node}: agent closed the channel at hello")
            frames = decoder.feed(data)
        hello = _decode(frames.pop(0))
        if not isinstance(hello, protocol.HelloReply):
            raise AgentError(f"node {self.node.node}: agent answered {hello.kind!r} to hello")
        if (self.agent_pid is not None and hello.pid != self.agent_pid) or (
            hello.seq < self.last_seq
        ):
            # A new agent (the old one died and was restarted): its frames count from 1.
            self.last_seq = hello.seq
            self._serving = None  # its relay, if it had one, is gone
        self.agent_pid = hello.pid
        self._set_worker_state(hello.worker)
        self.connected = True
        self._reader_task = self.bus.spawn(
            self._read(reader, decoder, frames), name=f"skyward:agent-reader-{self.node.node}"
        )
        return hello

    async def worker_ready(self, timeout: float = 60.0) -> None:
        """Wait until the node's worker (IPython) runs; ``AgentError`` if it cannot."""
        if self.worker_state == "ready":
            return
        if self.worker_state.startswith("failed"):
            raise AgentError(f"node {self.node.node}: the worker {self.worker_state}")
        if self._worker_ready is None or self._worker_ready.done():
            self._worker_ready = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(asyncio.shield(self._worker_ready), timeout)
        except TimeoutError:
            raise AgentError(
                f"node {self.node.node}: the worker did not start within {timeout:.0f} s"
            ) from None

    def _set_worker_state(self, state: str) -> None:
        self.worker_state = state
        waiter = self._worker_ready
        if waiter is None or waiter.done():
            return
        if state == "ready":
            waiter.set_result(None)
        elif state.startswith("failed"):
            waiter.set_exception(AgentError(f"node {self.node.node}: the worker {state}"))

    async def _read(self, reader: Any, decoder: wire.FrameDecoder, first: list[dict]) -> None:
        try:
            for frame in first:
                self._handle(frame)
            while True:
                data = await reader.read(1 << 18)
                if not data:
                    break
                for frame in decoder.feed(data):
                    self._handle(frame)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # asyncssh.ConnectionLost, OSError, FrameError, ...
            self._lost(f"the agent channel broke ({exc or type(exc).__name__})")
            return
        self._lost("the connection to the agent was lost")

    def _lost(self, reason: str) -> None:
        self.connected = False
        if self._closed:
            return
        if self.on_lost is not None:
            self.on_lost(self, reason)
        else:
            self.fail(AgentError(f"node {self.node.node}: {reason}"))

    async def reconnect(self, connection: Any, timeout: float = 15.0) -> None:
        """Resume over a new SSH connection: the agent resends what we missed."""
        self.connection = connection
        await self.open(timeout=timeout)

    def fail(self, error: BaseException) -> None:
        """Give up on this agent: every pending cell fails with ``error``."""
        self._closed = True
        self.connected = False
        for future in self._pending.values():
            if not future.done():
                future.set_exception(error)
        # blob answers may have no waiter left: fail them without an "exception never
        # retrieved" complaint
        for waiter in [*self._stored.values(), self._serving]:
            if waiter is not None and not waiter.done():
                waiter.set_exception(error)
                waiter.exception()
        self._pending.clear()
        self._stored.clear()
        self._serving = None

    def _handle(self, frame: dict[str, Any]) -> None:
        seq = frame.pop("seq", None)
        if isinstance(seq, int):
            if seq <= self.last_seq:
                return
            self.last_seq = seq
        message = _decode(frame)
        node = self.node
        publish = self.bus.publish
        match message:
            case protocol.Lines(task=task, lines=lines, partial=partial, after=after):
                publish(LogLines(node, task, tuple(lines), partial, after, message.panel_only))
                if self.bus.wants(Log):
                    for stream, line, overwrite in lines:
                        publish(Log(node, line, stream, overwrite))  # type: ignore[arg-type]
            case protocol.Display():
                publish(
                    Display(
                        node,
                        message.task,
                        message.data,
                        message.metadata,
                        message.transient,
                        message.update,
                    )
                )
            case protocol.Result():
                publish(Result(node, message.task, message.count, message.data, message.metadata))
            case protocol.Clear():
                publish(Clear(node, message.task, message.wait))
            case protocol.Metrics(points=points):
                for name, value, stamp in points:
                    publish(Metric(node, name, float(value), float(stamp)))
            case protocol.Started(task=task):
                publish(TaskStarted(task, node, self._names.get(task, "cell")))
            case Done(task=task):
                error = message.error
                text = f"{error.ename}: {error.evalue}" if error else None
                publish(TaskCompleted(task, node, message.duration, message.ok, text))
                self._answer(task, message)
            case Crash(task=task):
                self.worker_pid = None
                self._set_worker_state("starting" if message.restarted else "failed")
                publish(WorkerCrashed(node, message))
                if task is not None:
                    publish(TaskCompleted(task, node, 0.0, False, message.detail))
                    self._answer(task, message)
            case Missing(task=task, keys=keys):
                self.blobs.difference_update(keys)
                self._answer(task, message)
            case protocol.Stored(key=key, ok=ok):
                if ok:
                    self.blobs.add(key)
                stored = self._stored.pop(key, None)
                if stored is not None and not stored.done():
                    stored.set_result(message)
            case protocol.Serving():
                serving = self._serving
                if serving is not None and not serving.done():
                    serving.set_result(message)
            case protocol.WorkerReady(pid=pid):
                self.worker_pid = pid
                self._set_worker_state("ready")
            case protocol.Pong(id=ident, time=stamp):
                pong = self._pings.pop(ident, None)
                if pong is not None and not pong.done():
                    pong.set_result(stamp)

    def _answer(self, task: str, answer: Answer) -> None:
        self._names.pop(task, None)
        future = self._pending.pop(task, None)
        if future is not None and not future.done():
            future.set_result(answer)

    def _send(self, message: protocol.Message) -> None:
        if self._closed or self._writer is None or not self.connected:
            raise AgentError(f"node {self.node.node}: not connected to the agent")
        frame = wire.encode(protocol.encode(message))
        self.bytes_sent += len(frame)
        self._writer.write(frame)

    def _awaiting_stored(self, key: str) -> asyncio.Future[protocol.Stored]:
        future = self._stored.get(key)
        if future is None or future.done():
            future = self._stored[key] = asyncio.get_running_loop().create_future()
        return future

    async def _stored_answer(self, future: asyncio.Future[protocol.Stored], what: str) -> None:
        if not self.connected:
            raise AgentError(f"node {self.node.node}: not connected to the agent")
        try:
            stored = await asyncio.wait_for(asyncio.shield(future), 300.0)
        except TimeoutError:
            raise AgentError(f"node {self.node.node}: no answer to {what}") from None
        if not stored.ok:
            raise AgentError(f"node {self.node.node}: {stored.error}")

    async def put(self, payload: Payload) -> None:
        """Send ``payload``'s blob to the node, piece by piece (each waits until the
        channel has room, so a blob never sits whole in a buffer); return once the node
        has kept it."""
        future = self._awaiting_stored(payload.key)
        for offset, piece in payload.pieces(PUT_PIECE):
            self._send(protocol.Put(payload.key, payload.size, offset, len(piece)))
            self._writer.write(piece)  # raw, after its frame
            self.bytes_sent += len(piece)
            await self._writer.drain()
        await self._stored_answer(future, f"blob {payload.key[:12]}")

    async def fetch(self, payload: Payload, host: str, port: int, token: str) -> None:
        """Have the node fetch ``payload`` from the relay at ``host:port``; ``AgentError``
        with the node's reason if it cannot."""
        future = self._awaiting_stored(payload.key)
        self._send(protocol.Fetch(payload.key, payload.size, host, port, token))
        await self._stored_answer(future, f"fetching blob {payload.key[:12]}")

    async def serve(self, host: str, token: str) -> tuple[str, int]:
        """The address of this node's relay (started on ``host`` the first time)."""
        serving = self._serving
        if serving is None or (serving.done() and serving.result().port == 0):
            serving = self._serving = asyncio.get_running_loop().create_future()
            self._send(protocol.Serve(host, token))
        try:
            answer = await asyncio.wait_for(asyncio.shield(serving), 10.0)
        except TimeoutError:
            self._serving = None
            raise AgentError(f"node {self.node.node}: its relay did not start") from None
        if not answer.port:
            raise AgentError(f"node {self.node.node}: {answer.error}")
        return answer.host, answer.port

    async def execute(self, run: protocol.Run, name: str = "cell") -> Answer:
        """Run a cell on the node; return how it ended there."""
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._pending[run.task] = future
        self._names[run.task] = name
        try:
            self._send(run)
        except AgentError:
            self._pending.pop(run.task, None)
            raise
        return await future

    def interrupt(self, task_id: str) -> None:
        """Raise KeyboardInterrupt in the task if it is running on the node."""
        if not self._closed:
            self._send(protocol.Interrupt(task_id))

    def kill(self, task_id: str) -> None:
        """The task did not stop: the node kills its worker (the task ends as a crash)."""
        if not self._closed:
            self._send(protocol.Kill(task_id))

    def configure(self, env: dict[str, str], node: dict[str, Any], colors: str = "") -> None:
        """Set environment variables for the node's cells and what ``skyward.node()`` says."""
        self._send(protocol.Configure(env, node, colors))

    def refresh(self, cwd: str, changed: tuple[str, ...] = ()) -> None:
        """Before a cell: run cells in ``cwd``, reload modules of the ``changed`` files
        (both relative to the node's home)."""
        self._send(protocol.Refresh(cwd, tuple(changed)))

    async def ping(self, timeout: float = 5.0) -> float:
        """Round trip to the agent; returns the agent's clock."""
        key = next(_PINGS)
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._pings[key] = future
        self._send(protocol.Ping(key))
        return await asyncio.wait_for(future, timeout)

    async def aclose(self) -> None:
        """Close the channel (the agent keeps running until its instance goes)."""
        self._closed = True
        if self._writer is not None:
            self._writer.close()
        if self._reader_task is not None:
            self._reader_task.cancel()
            await asyncio.gather(self._reader_task, return_exceptions=True)
        self.fail(AgentError(f"node {self.node.node}: the agent connection was closed"))


def _decode(frame: dict[str, Any]) -> protocol.Message:
    try:
        return protocol.decode(frame)
    except protocol.ProtocolError as exc:
        raise wire.FrameError(str(exc)) from None
