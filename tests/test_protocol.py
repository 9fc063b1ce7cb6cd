"""The agent protocol's messages: each kind crosses the wire and comes back equal."""

from __future__ import annotations

import dataclasses

import pytest
from skyward import messages, wire
from skyward import protocol as P

ERROR = P.ErrorInfo(
    "ZeroDivisionError",
    "division by zero",
    ["\x1b[31mZeroDivisionError\x1b[0m: division by zero\n"],
    [("<ipython-input-2-ab12>", 3, "<module>", "1 / 0"), ("/srv/lib.py", 10, "f", "g()")],
    "builtins",
    True,
    b"\x80\x05pickled",
)

SAMPLES: list[P.Message] = [
    P.Hello(7),
    P.Run("t1", "x = 1", 3, {"a": b"\x80\x05."}, ("x",), 100),
    P.Interrupt("t1"),
    P.Kill("t1"),
    P.Configure({"A": "1"}, {"node": 0}, "Linux"),
    P.Refresh("work", ("work/m.py",)),
    P.Put("k" * 64, 10, 0, 10),
    P.Fetch("k" * 64, 10, "10.0.0.1", 4000, "token"),
    P.Serve("10.0.0.1", "token"),
    P.Place("k" * 64, "main/data/x.csv", 0o644),
    P.Ping(5),
    P.Shutdown(),
    P.Stream([("stdout", "hi\n")]),
    P.WorkerReady(12, "9.0"),
    P.Started("t1"),
    P.Display("t1", {"text/plain": "x"}, {"m": 1}, {"display_id": "d"}, True),
    P.Clear("t1", True),
    P.Result("t1", 3, {"text/plain": "1"}),
    P.Done("t1", False, 0.5, ERROR, None, "no x", 4),
    P.Metrics([("cpu", 12.5, 1.0)]),
    P.HelloReply(10, "3.11.7", "/home/u", 0, 2, "c1", 40, 3, "t1", "ready"),
    P.Lines("t1", [("stdout", "50%", True)], ("stdout",), None, True),
    P.Crash("t1", 12, None, 9, "SIGKILL", True, True, "killed", "tail", False),
    P.Stored("k", False, "disk full"),
    P.Placed("main/data/x.csv", False, "File exists"),
    P.Missing("t1", ["k"]),
    P.Serving("10.0.0.1", 4000),
    P.Pong(5, 1.5),
    P.Bye(),
]


def test_every_kind_has_a_sample() -> None:
    assert sorted(type(m).kind for m in SAMPLES) == sorted(messages._KINDS)


@pytest.mark.parametrize("message", SAMPLES, ids=lambda m: type(m).kind)
def test_a_message_crosses_the_wire_unchanged(message: P.Message) -> None:
    # the hello reply is not numbered: its seq is a field of its own, the newest frame
    seq = 0 if isinstance(message, P.HelloReply) else 9
    (frame,) = P.FrameReader().feed(P.pack(message, seq))
    assert frame.message == message and frame.seq == seq
    assert type(frame.message) is type(message)
    assert P.decode(P.encode(message)) == message


def test_messages_are_frozen_and_slotted() -> None:
    for message in SAMPLES:
        assert not hasattr(message, "__dict__")
        field = dataclasses.fields(message)[0].name if dataclasses.fields(message) else None
        if field is not None:
            with pytest.raises(dataclasses.FrozenInstanceError):
                setattr(message, field, None)


def test_a_hello_reply_cannot_be_numbered() -> None:
    with pytest.raises(ValueError, match="not numbered"):
        P.pack(P.HelloReply(1, "3.11", "/", 0, 1, "c", seq=4), seq=5)


def test_a_remote_error_travels_as_structured_frames() -> None:
    done = P.Done("t1", False, 0.5, ERROR)
    (frame,) = P.FrameReader().feed(P.pack(done, seq=1))
    assert isinstance(frame.message, P.Done) and frame.message.error == ERROR
    assert frame.message.error.frames[0] == ("<ipython-input-2-ab12>", 3, "<module>", "1 / 0")


def test_frames_split_anywhere_come_back_whole() -> None:
    data = b"".join(P.pack(m) for m in SAMPLES)
    reader = P.FrameReader()
    frames = [f for i in range(0, len(data), 7) for f in reader.feed(data[i : i + 7])]
    assert [f.message for f in frames] == SAMPLES


def test_unknown_kinds_and_fields_are_refused() -> None:
    with pytest.raises(P.ProtocolError, match="unknown message kind"):
        P.decode({"k": "exec", "code": "import os"})
    with pytest.raises(P.ProtocolError, match="bad 'ping' message"):
        P.decode({"k": "ping", "id": 1, "extra": 2})
    with pytest.raises(P.ProtocolError, match="bad 'done' message"):
        P.decode({"k": "done", "task": "t", "ok": False, "duration": 0.0, "error": {"x": 1}})


def test_a_frame_that_refers_to_a_class_is_refused() -> None:
    data = P.pack(P.Display("t1", {"text/plain": ValueError("x")}))
    with pytest.raises(wire.FrameError, match="only plain data"):
        P.FrameReader().feed(data)
