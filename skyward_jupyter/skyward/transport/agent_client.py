"""The kernel's side of the agent protocol: one client per node, over a channel.

It sends cells and interrupts, and turns the supervisor's numbered frames into facts on
the bus: ``TaskStarted``, ``Log`` lines, ``TaskCompleted``, and the cell's outputs. It
remembers the last frame seen, so a reconnect asks the agent to resend only what was
missed. The bytes go through a ``Channel`` (``channel.py``): the agent's socket over SSH
in production, memory in tests.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Iterator
from typing import Any, Literal

import asyncssh

from .. import protocol
from ..core.bus import EventBus
from ..core.outputs import Clear, Display, LogLines, Result, WorkerCrashed
from ..errors import AgentError
from ..events import Log, Metric, NodeInstance, TaskCompleted, TaskStarted
from ..payload import Payload
from ..protocol import Crash, Done, Frame, Missing
from .channel import Channel, Opener, SSHOpener

__all__ = ["AgentClient", "Answer", "PUT_PIECE"]

PUT_PIECE = 4 << 20  # bytes of a blob per frame: control frames wait behind one at most

_PINGS = itertools.count(1)  # ping ids: unique, as heartbeats and callers ping at once

Answer = Done | Crash | Missing
"""How a cell ended on a node: it ran (``Done``), its worker died (``Crash``), or it did
not start for lack of pushed blobs (``Missing``: send them and run it again)."""


class AgentClient:
    """Talks to the supervisor of one node through the channels ``opener`` opens.

    ``AgentClient(bus, node, connection, socket_path)``, with an asyncssh connection and
    the agent's socket on the node, is short for ``AgentClient(bus, node,
    SSHOpener(connection, socket_path))``.
    """

    def __init__(
        self,
        bus: EventBus,
        node: NodeInstance,
        opener: Opener | asyncssh.SSHClientConnection,
        socket_path: str = "",
    ) -> None:
        self.bus = bus
        self.node = node
        self._opener = self._as_opener(opener, socket_path)
        self._channel: Channel | None = None
        self.last_seq = 0
        self.agent_pid: int | None = None
        self.worker_pid: int | None = None
        self.worker_state = "starting"
        self._worker_ready: asyncio.Future[None] | None = None
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
        self._placed: dict[str, asyncio.Future[protocol.Placed]] = {}
        self.on_lost: Callable[[AgentClient, str], None] | None = None
        """Called when the channel drops without our asking; pending cells then wait
        (for a reconnect, or for ``fail``) instead of failing at once."""

    @staticmethod
    def _as_opener(opener: Opener | asyncssh.SSHClientConnection, socket_path: str) -> Opener:
        if isinstance(opener, asyncssh.SSHClientConnection):
            if not socket_path:
                raise TypeError("an SSH connection needs the agent's socket_path")
            return SSHOpener(opener, socket_path)
        if socket_path:
            raise TypeError("socket_path goes with an asyncssh connection, not an opener")
        return opener

    async def open(self, timeout: float = 15.0) -> protocol.HelloReply:
        """Open a channel (waiting for the agent's socket to appear) and say hello."""
        deadline = time.monotonic() + timeout
        self._drop_channel()
        try:
            channel = await self._opener(timeout)
        except AgentError as exc:
            raise AgentError(f"node {self.node.node}: {exc}") from exc
        try:
            channel.send(protocol.Hello(self.last_seq))
            frames = await asyncio.wait_for(
                channel.receive(), max(1.0, deadline - time.monotonic())
            )
            first = None if frames is None else next(frames, None)
            if frames is None or first is None:
                raise AgentError(f"node {self.node.node}: agent closed the channel at hello")
        except BaseException:
            channel.close()
            raise
        hello = first.message
        if not isinstance(hello, protocol.HelloReply):
            channel.close()
            raise AgentError(f"node {self.node.node}: agent answered {hello.kind!r} to hello")
        if (self.agent_pid is not None and hello.pid != self.agent_pid) or (
            hello.seq < self.last_seq
        ):
            # A new agent (the old one died and was restarted): its frames count from 1.
            self.last_seq = hello.seq
            self._serving = None  # its relay, if it had one, is gone
        self.agent_pid = hello.pid
        self._set_worker_state(hello.worker)
        self._channel = channel
        self.connected = True
        self._reader_task = self.bus.spawn(
            self._read(channel, frames), name=f"skyward:agent-reader-{self.node.node}"
        )
        return hello

    def _drop_channel(self) -> None:
        """Forget the current channel (before a new one): close it, stop its reader."""
        channel, self._channel = self._channel, None
        self.connected = False
        if channel is not None:
            channel.close()
        task, self._reader_task = self._reader_task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()

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

    async def _read(self, channel: Channel, first: Iterator[Frame]) -> None:
        try:
            for frame in first:
                self._handle(frame)
            while (frames := await channel.receive()) is not None:
                for frame in frames:
                    self._handle(frame)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # asyncssh.ConnectionLost, OSError, FrameError, ...
            self._lost(channel, f"the agent channel broke ({exc or type(exc).__name__})")
            return
        self._lost(channel, "the connection to the agent was lost")

    def _lost(self, channel: Channel, reason: str) -> None:
        if channel is not self._channel:  # an old channel, already replaced
            return
        self.connected = False
        if self._closed:
            return
        if self.on_lost is not None:
            self.on_lost(self, reason)
        else:
            self.fail(AgentError(f"node {self.node.node}: {reason}"))

    async def reconnect(
        self, opener: Opener | asyncssh.SSHClientConnection, timeout: float = 15.0
    ) -> None:
        """Resume through ``opener`` (or a new SSH connection to the same agent socket):
        the agent resends what we missed."""
        if isinstance(opener, asyncssh.SSHClientConnection):
            if not isinstance(self._opener, SSHOpener):
                raise TypeError("this agent client was not opened over SSH")
            opener = SSHOpener(opener, self._opener.socket_path)
        self._opener = opener
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
        for waiter in [*self._stored.values(), *self._placed.values(), self._serving]:
            if waiter is not None and not waiter.done():
                waiter.set_exception(error)
                waiter.exception()
        self._pending.clear()
        self._stored.clear()
        self._serving = None

    def _handle(self, frame: Frame) -> None:
        seq = frame.seq
        if seq:
            if seq <= self.last_seq:
                return  # seen before a reconnect, replayed again
            self.last_seq = seq
        message = frame.message
        node = self.node
        publish = self.bus.publish
        match message:
            case protocol.Lines(task=task, lines=lines, partial=partial, after=after):
                publish(LogLines(node, task, tuple(lines), partial, after, message.panel_only))
                if self.bus.wants(Log):
                    for stream, line, overwrite in lines:
                        publish(Log(node, line, _stream(stream), overwrite))
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
            case protocol.Placed(path=path):
                placed = self._placed.pop(path, None)
                if placed is not None and not placed.done():
                    placed.set_result(message)
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

    def _send(self, message: protocol.Message, raw: bytes | memoryview = b"") -> Channel:
        channel = self._channel
        if self._closed or channel is None or not self.connected:
            raise AgentError(f"node {self.node.node}: not connected to the agent")
        self.bytes_sent += channel.send(message, raw)
        return channel

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
            put = protocol.Put(payload.key, payload.size, offset, len(piece))
            await self._send(put, piece).drain()
            payload.sent(len(piece))
        await self._stored_answer(future, f"blob {payload.key[:12]}")

    async def fetch(self, payload: Payload, host: str, port: int, token: str) -> None:
        """Have the node fetch ``payload`` from the relay at ``host:port``; ``AgentError``
        with the node's reason if it cannot."""
        future = self._awaiting_stored(payload.key)
        self._send(protocol.Fetch(payload.key, payload.size, host, port, token))
        await self._stored_answer(future, f"fetching blob {payload.key[:12]}")

    async def place(self, key: str, path: str, mode: int) -> None:
        """Have the node copy blob ``key`` (which it holds) to ``path``; ``AgentError``
        with its reason if it cannot."""
        future = self._placed[path] = asyncio.get_running_loop().create_future()
        self._send(protocol.Place(key, path, mode))
        try:
            placed = await asyncio.wait_for(future, 300.0)
        except TimeoutError:
            raise AgentError(f"node {self.node.node}: no answer writing {path}") from None
        if not placed.ok:
            raise AgentError(f"node {self.node.node}: {placed.error}")

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
        task = self._reader_task
        self._drop_channel()
        if task is not None and task is not asyncio.current_task():
            await asyncio.gather(task, return_exceptions=True)
        self.fail(AgentError(f"node {self.node.node}: the agent connection was closed"))


def _stream(name: str) -> Literal["stdout", "stderr"]:
    """The stream a line came from, as the instance named it (anything else: stdout)."""
    return "stderr" if name == "stderr" else "stdout"
