"""The machinery of the agent protocol: the message base and its registry, and the codec
between messages, plain dicts and frames (``protocol`` declares the messages).

Standard library only: uploaded to instances with the agent.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple, TypeVar, dataclass_transform

from . import wire

__all__ = [
    "Frame",
    "FrameReader",
    "Message",
    "ProtocolError",
    "decode",
    "decode_frame",
    "encode",
    "message",
    "pack",
]


class ProtocolError(Exception):
    """A message of an unknown kind, or with fields its kind does not have."""


@dataclass(frozen=True, slots=True)
class Message:
    """Base of every message; ``kind`` is its name on the wire."""

    kind: ClassVar[str] = ""


_KINDS: dict[str, type[Message]] = {}
_NESTED: dict[type[Message], dict[str, type]] = {}
_FIELDS: dict[type[Message], tuple[str, ...]] = {}
_UNNUMBERED: set[type[Message]] = set()  # kinds whose ``seq`` is a field of their own
M = TypeVar("M", bound=Message)


@dataclass_transform(frozen_default=True)
def message(kind: str, **nested: type) -> Callable[[type[M]], type[M]]:
    """Make the class a frozen, slotted message named ``kind`` on the wire; ``nested``
    names its fields that hold a dataclass (they travel as dicts)."""

    def register(cls: type[M]) -> type[M]:
        made = dataclass(frozen=True, slots=True)(cls)
        made.kind = kind
        _KINDS[kind] = made
        _FIELDS[made] = tuple(f.name for f in dataclasses.fields(made))
        if nested:
            _NESTED[made] = nested
        if "seq" in _FIELDS[made]:
            _UNNUMBERED.add(made)
        return made

    return register


class Frame(NamedTuple):
    """A message as it crossed the channel.

    ``seq`` numbers the supervisor's frames, so a client that reconnects says which it saw
    (0: not numbered, as the client's own and the hello reply are); ``raw`` is the bytes
    that followed a ``Put`` frame on the channel. A tuple: one is made per frame read.
    """

    message: Message
    seq: int = 0
    raw: bytes = b""


def encode(message: Message) -> dict[str, Any]:
    """``message`` as the plain dict that travels."""
    cls = type(message)
    out: dict[str, Any] = {"k": cls.kind}
    nested = _NESTED.get(cls)
    for name in _FIELDS[cls]:
        value = getattr(message, name)
        if nested and name in nested and value is not None:
            value = dataclasses.asdict(value)
        out[name] = value
    return out


def pack(message: Message, seq: int = 0) -> bytes:
    """One frame holding ``message`` (numbered ``seq``, unless 0), ready to send."""
    data = encode(message)
    if seq:
        if "seq" in data:
            raise ValueError(f"a {message.kind!r} message is not numbered")
        data["seq"] = seq
    return wire.encode(data)


def decode(data: dict[str, Any]) -> Message:
    """The message a plain dict holds; ``ProtocolError`` if it is not one."""
    return decode_frame(data).message


def decode_frame(data: dict[str, Any]) -> Frame:
    """The frame a plain dict holds: its message and its number."""
    return _frame(dict(data))


def _frame(values: dict[str, Any]) -> Frame:
    """``decode_frame`` of a dict of our own (emptied of its kind and number)."""
    kind = values.pop("k", None)
    cls = _KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ProtocolError(f"unknown message kind {kind!r}")
    # the hello reply's ``seq`` is a field of its own (the newest frame), not its number
    seq = 0 if cls in _UNNUMBERED else values.pop("seq", 0)
    nested = _NESTED.get(cls)
    try:
        if nested:
            for name, inner in nested.items():
                if isinstance(values.get(name), dict):
                    values[name] = inner(**values[name])
        return Frame(cls(**values), seq if type(seq) is int else 0)
    except TypeError as exc:
        raise ProtocolError(f"bad {kind!r} message: {exc}") from None


class FrameReader:
    """Turns the bytes of a channel into frames, as they arrive (plain data only)."""

    def __init__(self) -> None:
        self._decoder = wire.FrameDecoder(plain=True)

    def feed(self, data: bytes | memoryview) -> Iterator[Frame]:
        """Add received bytes; return the frames they complete, in order, each decoded
        as it is taken (a read of many frames then holds one message at a time, not all:
        measured a fifth faster for a stream of lines)."""
        return map(_frame, self._decoder.feed(data))
