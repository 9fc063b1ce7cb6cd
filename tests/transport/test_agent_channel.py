"""The agent client driven through an in-memory channel, against a scripted agent end.

No SSH and no agent process: ``ScriptedAgent`` plays the supervisor's side of the
protocol (the hello and its replay of numbered frames, pings, cells as a script says) on
``MemoryChannel``s, which pack and read back every frame with the protocol's codec.
"""

from __future__ import annotations

import asyncio
import pickle
from typing import Any

import pytest
from skyward import protocol as P
from skyward import wire
from skyward.core.bus import EventBus
from skyward.core.outputs import LogLines, WorkerCrashed
from skyward.errors import AgentError
from skyward.events import Instance, Log, NodeInstance, TaskCompleted, TaskStarted
from skyward.jupyter.remote_errors import where
from skyward.payload import make_payload
from skyward.transport import agent_client
from skyward.transport.agent_client import AgentClient
from skyward.transport.channel import Channel, MemoryChannel

NODE = NodeInstance(Instance("i-0", ip="127.0.0.2"), 0, "container", "u", "/k")

KEYBOARD_INTERRUPT = P.ErrorInfo(
    "KeyboardInterrupt",
    "",
    ["\x1b[31mKeyboardInterrupt\x1b[0m\n"],
    [("<ipython-input-3-5f2a>", 4, "<module>", "    time.sleep(1)"), ("/lib/x.py", 9, "f", "g()")],
    "builtins",
    True,
)


class ScriptedAgent:
    """The supervisor's end: numbers what it sends, replays it after a reconnect's hello,
    answers pings, and runs each cell by the script ``cells[code]`` (the messages it
    sends back; ``hold`` waits for an interrupt or a kill first)."""

    def __init__(self, pid: int = 4242) -> None:
        self.pid = pid
        self.seq = 0
        self.log: list[tuple[int, P.Message]] = []
        self.received: list[P.Message] = []
        self.blobs: dict[str, bytearray] = {}
        self.cells: dict[str, list[P.Message]] = {}
        self.held: dict[str, str] = {}  # task -> code of a cell waiting to be stopped
        self.holding = asyncio.Event()  # set once a cell waits to be stopped
        self.end: MemoryChannel | None = None
        self.replay_from: int | None = None  # replay from here instead of the hello's since
        self.opened = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def open(self, timeout: float) -> Channel:
        client_end, agent_end = MemoryChannel.pair()
        self.end = agent_end
        self.opened += 1
        task = asyncio.get_running_loop().create_task(self._serve(agent_end))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return client_end

    def emit(self, message: P.Message) -> None:
        """Number ``message`` and send it, if a client is connected (else it waits in the
        replay log for the next hello)."""
        self.seq += 1
        self.log.append((self.seq, message))
        end = self.end
        if end is not None and not end.closed:
            end.send(message, seq=self.seq)

    def drop(self) -> None:
        """The channel breaks (the SSH connection went away)."""
        if self.end is not None:
            self.end.close()
            self.end = None

    async def _serve(self, end: MemoryChannel) -> None:
        while (frames := await end.receive()) is not None:
            for frame in frames:
                self._on(end, frame)

    def _on(self, end: MemoryChannel, frame: P.Frame) -> None:
        message = frame.message
        self.received.append(message)
        match message:
            case P.Hello(since=since):
                oldest = self.log[0][0] if self.log else self.seq + 1
                end.send(P.HelloReply(self.pid, "3.11", "/home/u", 0, 1, "c", self.seq, oldest))
                start = since if self.replay_from is None else self.replay_from
                for seq, old in self.log:
                    if seq > start:
                        end.send(old, seq=seq)
                self.emit(P.WorkerReady(self.pid + 1, "9.0"))
            case P.Ping(id=ident):
                self.emit(P.Pong(ident, 1234.5))
            case P.Run(task=task, code=code):
                self.emit(P.Started(task))
                if code.startswith("hold"):
                    self.held[task] = code
                    self.holding.set()
                    return
                for reply in self.cells.get(code, [P.Done(task, True, 0.01)]):
                    self.emit(reply)
            case P.Interrupt(task=task) if task in self.held:
                del self.held[task]
                self.emit(P.Done(task, False, 0.5, KEYBOARD_INTERRUPT))
            case P.Kill(task=task) if task in self.held:
                del self.held[task]
                self.emit(P.Crash(task, self.pid + 1, signal=9, signame="SIGKILL", killed=True))
            case P.Put(key=key, size=size, offset=offset, raw=raw):
                blob = self.blobs.setdefault(key, bytearray())
                assert offset == len(blob) and len(frame.raw) == raw
                blob += frame.raw
                if len(blob) == size:
                    self.emit(P.Stored(key, True))


class Recorder:
    """What the client published on the bus, in order."""

    def __init__(self, bus: EventBus) -> None:
        self.events: list[Any] = []
        bus.subscribe_all(self.events.append)

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]


async def connected(agent: ScriptedAgent) -> tuple[AgentClient, Recorder]:
    bus = EventBus()
    recorder = Recorder(bus)
    client = AgentClient(bus, NODE, agent.open)
    hello = await client.open(timeout=2.0)
    assert hello.pid == agent.pid and client.connected
    await client.worker_ready(timeout=2.0)
    assert client.worker_pid == agent.pid + 1
    return client, recorder


async def held(client: AgentClient, agent: ScriptedAgent, code: str) -> asyncio.Future[Any]:
    """Cell ``t1`` running ``code`` (a "hold" cell), once the agent holds it."""
    running = asyncio.ensure_future(client.execute(P.Run("t1", code)))
    await agent.holding.wait()
    return running


async def test_a_cell_runs_started_lines_done() -> None:
    agent = ScriptedAgent()
    agent.cells["print('hi')"] = [
        P.Lines("t1", [("stdout", "hi", False)]),
        P.Result("t1", 1, {"text/plain": "42"}),
        P.Done("t1", True, 0.25),
    ]
    client, recorder = await connected(agent)
    answer = await client.execute(P.Run("t1", "print('hi')", count=1), name="greeting")
    assert answer == P.Done("t1", True, 0.25)
    assert agent.received[1] == P.Run("t1", "print('hi')", count=1)
    kinds = [type(e).__name__ for e in recorder.events]
    # one Log per line too, as someone (the recorder) listens to every event
    assert kinds == ["TaskStarted", "LogLines", "Log", "Result", "TaskCompleted"]
    assert recorder.of(Log)[0] == Log(NODE, "hi", "stdout", False)
    assert recorder.of(TaskStarted)[0] == TaskStarted("t1", NODE, "greeting")
    assert recorder.of(LogLines)[0].lines == (("stdout", "hi", False),)
    assert recorder.of(TaskCompleted)[0].success is True
    assert client.last_seq == agent.seq
    # what the client wrote after its hello is counted: the cell, as a packed frame
    assert client.bytes_sent == len(P.pack(P.Run("t1", "print('hi')", count=1)))
    await client.aclose()


async def test_interrupt_stops_the_cell_and_its_frames_arrive_structured() -> None:
    agent = ScriptedAgent()
    client, recorder = await connected(agent)
    running = await held(client, agent, "hold: sleep")
    client.interrupt("t1")
    answer = await asyncio.wait_for(running, 2.0)
    assert isinstance(answer, P.Done) and not answer.ok and answer.error is not None
    assert answer.error.frames[0] == ("<ipython-input-3-5f2a>", 4, "<module>", "    time.sleep(1)")
    assert where(answer.error) == "KeyboardInterrupt at line 4: time.sleep(1)"
    completed = recorder.of(TaskCompleted)[0]
    assert (completed.success, completed.error) == (False, "KeyboardInterrupt: ")
    await client.aclose()


async def test_a_crash_ends_the_cell_and_a_fresh_worker_is_awaited() -> None:
    agent = ScriptedAgent()
    client, recorder = await connected(agent)
    running = await held(client, agent, "hold: ignore interrupts")
    client.kill("t1")
    answer = await asyncio.wait_for(running, 2.0)
    assert isinstance(answer, P.Crash) and answer.killed and answer.signame == "SIGKILL"
    assert recorder.of(WorkerCrashed)[0].crash == answer
    assert client.worker_state == "starting" and client.worker_pid is None
    waiting = asyncio.ensure_future(client.worker_ready(timeout=2.0))
    await asyncio.sleep(0)
    assert not waiting.done()
    agent.emit(P.WorkerReady(7, "9.0"))
    await waiting
    assert client.worker_state == "ready" and client.worker_pid == 7
    await client.aclose()


async def test_ping_returns_the_agents_clock() -> None:
    agent = ScriptedAgent()
    client, _ = await connected(agent)
    assert await client.ping(timeout=2.0) == 1234.5
    assert any(isinstance(m, P.Ping) for m in agent.received)
    await client.aclose()


async def test_a_dropped_channel_calls_on_lost_and_the_cell_waits() -> None:
    agent = ScriptedAgent()
    client, _ = await connected(agent)
    lost: list[str] = []
    client.on_lost = lambda c, reason: lost.append(reason)
    running = await held(client, agent, "hold: long")
    agent.drop()
    for _ in range(100):
        if lost:
            break
        await asyncio.sleep(0)
    assert lost == ["the connection to the agent was lost"]
    assert not client.connected and not running.done()
    with pytest.raises(AgentError, match="not connected"):
        client.interrupt("t1")
    client.fail(AgentError("node 0: gone"))
    with pytest.raises(AgentError, match="gone"):
        await running


async def test_without_on_lost_a_drop_fails_pending_cells() -> None:
    agent = ScriptedAgent()
    client, _ = await connected(agent)
    running = await held(client, agent, "hold: long")
    agent.drop()
    with pytest.raises(AgentError, match="node 0: the connection to the agent was lost"):
        await asyncio.wait_for(running, 2.0)


async def test_reconnect_replays_what_was_missed_once() -> None:
    agent = ScriptedAgent()
    client, recorder = await connected(agent)
    client.on_lost = lambda c, reason: None
    running = await held(client, agent, "hold: long")
    agent.emit(P.Lines("t1", [("stdout", "before", False)]))
    await asyncio.sleep(0)
    seen = client.last_seq
    agent.drop()
    # while no client listens the cell goes on: its frames wait in the agent's log
    agent.emit(P.Lines("t1", [("stdout", "while away", False)]))
    agent.emit(P.Done("t1", True, 3.0))
    assert not running.done()
    agent.replay_from = seen - 2  # an agent that resends a few frames too many
    await client.reconnect(agent.open, timeout=2.0)
    assert [m for m in agent.received if isinstance(m, P.Hello)] == [P.Hello(0), P.Hello(seen)]
    answer = await asyncio.wait_for(running, 2.0)
    assert answer == P.Done("t1", True, 3.0)
    texts = [line[1] for e in recorder.of(LogLines) for line in e.lines]
    assert texts == ["before", "while away"]
    assert len(recorder.of(TaskStarted)) == 1 and len(recorder.of(TaskCompleted)) == 1
    assert agent.opened == 2 and client.connected
    await client.aclose()


async def test_a_new_agent_after_reconnect_counts_frames_afresh() -> None:
    agent = ScriptedAgent()
    agent.emit(P.Lines(None, [("stdout", "old", False)]))
    client, _ = await connected(agent)
    client.on_lost = lambda c, reason: None
    assert client.last_seq == 2
    agent.drop()
    fresh = ScriptedAgent(pid=5151)
    await client.reconnect(fresh.open, timeout=2.0)
    assert client.agent_pid == 5151
    fresh.emit(P.Lines(None, [("stdout", "new", False)]))
    assert await client.ping(timeout=2.0) == 1234.5
    assert client.last_seq == fresh.seq
    await client.aclose()


async def test_put_sends_the_blob_in_pieces_after_their_frames(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(agent_client, "PUT_PIECE", 1000)
    agent = ScriptedAgent()
    client, _ = await connected(agent)
    stream = pickle.dumps(bytes(range(256)) * 20, protocol=5)
    payload = make_payload("x", stream, [])
    before = client.bytes_sent
    await asyncio.wait_for(client.put(payload), 2.0)
    blob = bytes(agent.blobs[payload.key])
    assert blob == stream and payload.key in client.blobs
    puts = [m for m in agent.received if isinstance(m, P.Put)]
    assert [p.offset for p in puts] == list(range(0, len(stream), 1000))
    frames = sum(len(P.pack(p)) for p in puts)
    assert client.bytes_sent - before == frames + len(stream)
    await client.aclose()


async def test_a_frame_that_carries_a_class_breaks_the_channel() -> None:
    agent = ScriptedAgent()
    client, _ = await connected(agent)
    lost: list[str] = []
    client.on_lost = lambda c, reason: lost.append(reason)
    assert agent.end is not None
    agent.end.send(P.Display("t1", {"text/plain": Instance("i-9")}), seq=99)
    for _ in range(100):
        if lost:
            break
        await asyncio.sleep(0)
    assert len(lost) == 1 and "only plain data is allowed" in lost[0]
    assert client.last_seq < 99


def test_a_frame_of_an_unknown_kind_is_refused_as_it_is_taken() -> None:
    frames = P.FrameReader().feed(P.pack(P.Ping(1)) + wire.encode({"k": "nope", "seq": 1}))
    assert next(frames) == P.Frame(P.Ping(1))
    with pytest.raises(P.ProtocolError, match="unknown message kind 'nope'"):
        next(frames)


async def test_an_agent_that_does_not_say_hello_is_refused() -> None:
    async def opener(timeout: float) -> Channel:
        client_end, agent_end = MemoryChannel.pair()
        agent_end.send(P.Pong(1, 0.0))
        return client_end

    client = AgentClient(EventBus(), NODE, opener)
    with pytest.raises(AgentError, match="answered 'pong' to hello"):
        await client.open(timeout=1.0)
    assert not client.connected
