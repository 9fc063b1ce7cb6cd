"""The kernel's side of the agent protocol: one client per node, over an SSH channel.

It sends cells and interrupts, and turns the agent's numbered frames into facts on the
bus: ``TaskStarted``, ``Log`` lines, ``TaskCompleted``. It remembers the last frame seen,
so that a reconnect asks the agent to resend only what was missed.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from typing import Any

from .. import wire
from ..core.bus import EventBus
from ..core.outputs import Display, LogLines
from ..errors import AgentError
from ..events import Log, Metric, NodeInstance, TaskCompleted, TaskStarted

__all__ = ["AgentClient"]

_PINGS = itertools.count(1)  # ping ids: unique, as heartbeats and callers ping at once


class AgentClient:
    """Talks to the agent of one node through a unix-socket channel of its SSH connection."""

    def __init__(self, bus: EventBus, node: NodeInstance, connection: Any, socket_path: str):
        self.bus = bus
        self.node = node
        self.connection = connection
        self.socket_path = socket_path
        self.last_seq = 0
        self.agent_pid: int | None = None
        self._writer: Any = None
        self._reader_task: asyncio.Task[None] | None = None
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._names: dict[str, str] = {}
        self._pings: dict[int, asyncio.Future[float]] = {}
        self._closed = False
        self.connected = False
        self.on_lost: Callable[[AgentClient, str], None] | None = None
        """Called when the channel drops without our asking; pending cells then wait
        (for a reconnect, or for ``fail``) instead of failing at once."""

    async def open(self, timeout: float = 15.0) -> dict[str, Any]:
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
        writer.write(wire.encode({"op": "hello", "since": self.last_seq}))
        frames: list[dict[str, Any]] = []
        while not frames:
            data = await asyncio.wait_for(
                reader.read(1 << 16), max(1.0, deadline - time.monotonic())
            )
            if not data:
                raise AgentError(f"node {self.node.node}: agent closed the channel at hello")
            frames = decoder.feed(data)
        hello = frames.pop(0)
        if hello.get("k") != "hello":
            raise AgentError(f"node {self.node.node}: agent answered {hello.get('k')!r} to hello")
        newest = int(hello.get("seq") or 0)
        if (self.agent_pid is not None and hello.get("pid") != self.agent_pid) or (
            newest < self.last_seq
        ):
            # A new agent (the old one died and was restarted): its frames count from 1.
            self.last_seq = newest
        self.agent_pid = hello.get("pid")
        self.connected = True
        self._reader_task = self.bus.spawn(
            self._read(reader, decoder, frames), name=f"skyward:agent-reader-{self.node.node}"
        )
        return hello

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
            self._fail(f"node {self.node.node}: {reason}")

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
        self._pending.clear()

    def _fail(self, message: str) -> None:
        self._closed = True
        for future in self._pending.values():
            if not future.done():
                future.set_exception(AgentError(message))
        self._pending.clear()

    def _handle(self, frame: dict[str, Any]) -> None:
        seq = frame.get("seq")
        if isinstance(seq, int):
            if seq <= self.last_seq:
                return
            self.last_seq = seq
        kind = frame.get("k")
        node = self.node
        publish = self.bus.publish
        if kind == "log":
            lines = frame["lines"]
            publish(LogLines(node, frame.get("task"), tuple(lines)))
            if self.bus.wants(Log):
                for stream, line, overwrite in lines:
                    publish(Log(node, line, stream, overwrite))
        elif kind == "display":
            publish(Display(node, frame.get("task"), frame["data"], frame.get("metadata") or {}))
        elif kind == "metrics":
            for name, value, stamp in frame["points"]:
                publish(Metric(node, name, float(value), float(stamp)))
        elif kind == "started":
            task = frame["task"]
            publish(TaskStarted(task, node, self._names.get(task, "cell")))
        elif kind == "done":
            task = frame["task"]
            error = frame.get("error")
            text = f"{error['ename']}: {error['evalue']}" if error else None
            publish(TaskCompleted(task, node, float(frame["duration"]), bool(frame["ok"]), text))
            self._names.pop(task, None)
            future = self._pending.pop(task, None)
            if future is not None and not future.done():
                future.set_result(frame)
        elif kind == "pong":
            pong = self._pings.pop(frame.get("id"), None)
            if pong is not None and not pong.done():
                pong.set_result(float(frame.get("time", 0.0)))

    def _send(self, message: dict[str, Any]) -> None:
        if self._closed or self._writer is None or not self.connected:
            raise AgentError(f"node {self.node.node}: not connected to the agent")
        self._writer.write(wire.encode(message))

    async def execute(
        self,
        task_id: str,
        code: str,
        filename: str,
        name: str = "cell",
        push: dict[str, bytes] | None = None,
        pull: list[str] | None = None,
    ) -> dict:
        """Run ``code`` on the node; return the agent's ``done`` frame.

        ``push`` maps variable names to their cloudpickles, put in the namespace first; ``pull``
        names variables whose values come back pickled in the frame's ``pulled``.
        """
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[task_id] = future
        self._names[task_id] = name
        try:
            message: dict[str, Any] = {"op": "exec", "task": task_id, "code": code}
            message["filename"] = filename
            if push:
                message["push"] = push
            if pull:
                message["pull"] = list(pull)
            self._send(message)
        except AgentError:
            self._pending.pop(task_id, None)
            raise
        return await future

    def interrupt(self, task_id: str) -> None:
        """Raise KeyboardInterrupt in the task if it is running on the node."""
        if not self._closed:
            self._send({"op": "interrupt", "task": task_id})

    async def wait(self, task_id: str, timeout: float) -> dict[str, Any] | None:
        """The ``done`` frame of a task already sent, or None if it does not come in time."""
        future = self._pending.get(task_id)
        if future is None:
            return None
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        except (TimeoutError, AgentError):
            return None

    def configure(self, env: dict[str, str], node: dict[str, Any]) -> None:
        """Set environment variables for the node's cells and what ``skyward.node()`` says."""
        self._send({"op": "configure", "env": env, "node": node})

    async def ping(self, timeout: float = 5.0) -> float:
        """Round trip to the agent; returns the agent's clock."""
        key = next(_PINGS)
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._pings[key] = future
        self._send({"op": "ping", "id": key})
        return await asyncio.wait_for(future, timeout)

    async def aclose(self) -> None:
        """Close the channel (the agent keeps running until its instance goes)."""
        self._closed = True
        if self._writer is not None:
            self._writer.close()
        if self._reader_task is not None:
            self._reader_task.cancel()
            await asyncio.gather(self._reader_task, return_exceptions=True)
        self._fail(f"node {self.node.node}: the agent connection was closed")
