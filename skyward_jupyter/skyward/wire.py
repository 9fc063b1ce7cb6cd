"""The agent protocol's framing: length-prefixed pickles of plain data.

Shared by the agent (on the instance) and the client (in the kernel), so it uses the
standard library only and is uploaded to instances beside the agent.

A frame is a 4-byte big-endian length and a pickle (protocol 5) of a dict. Frames from an
instance are decoded with :class:`PlainUnpickler`, which refuses every class: an instance
can send strings, numbers, bytes, lists, tuples and dicts, never code. Values that are
objects travel as cloudpickle bytes inside a frame and are loaded only where the user asks.
"""

from __future__ import annotations

import io
import os
import pickle
import struct
from collections.abc import Iterator
from typing import Any

__all__ = ["MAX_FRAME", "FrameDecoder", "FrameError", "decode_plain", "encode", "read_frames"]

HEADER = struct.Struct("!I")
MAX_FRAME = 256 * 1024 * 1024


class FrameError(Exception):
    """A frame is malformed, too large, or carries a class where plain data belongs."""


class PlainUnpickler(pickle.Unpickler):
    """Unpickles plain data only; any class reference is an error."""

    def find_class(self, module: str, name: str) -> Any:
        raise FrameError(f"frame refers to {module}.{name}; only plain data is allowed")


def encode(message: dict[str, Any]) -> bytes:
    """One frame holding ``message``."""
    body = pickle.dumps(message, protocol=5)
    if len(body) > MAX_FRAME:
        raise FrameError(f"frame of {len(body)} bytes exceeds {MAX_FRAME}")
    return HEADER.pack(len(body)) + body


def decode_plain(body: bytes) -> dict[str, Any]:
    """Decode a frame body that must hold plain data."""
    try:
        message = PlainUnpickler(io.BytesIO(body)).load()
    except FrameError:
        raise
    except Exception as exc:
        raise FrameError(f"undecodable frame: {exc}") from exc
    if not isinstance(message, dict):
        raise FrameError(f"frame holds {type(message).__name__}, not a dict")
    return message


class FrameDecoder:
    """Incremental decoder: feed it bytes as they arrive, get whole frames back."""

    def __init__(self, plain: bool = True) -> None:
        self._buffer = bytearray()
        self._plain = plain
        self._stop_at_raw = False

    def feed_until_raw(self, data: bytes | memoryview) -> tuple[list[dict[str, Any]], bytes]:
        """Like ``feed``, but stop after a frame that announces ``raw`` bytes after it;
        return the frames and the bytes received past that frame (the raw bytes first,
        for the caller to consume, then whatever follows them, to feed again)."""
        self._stop_at_raw = True
        try:
            frames = self.feed(data)
        finally:
            self._stop_at_raw = False
        if frames and frames[-1].get("raw"):
            rest, self._buffer = bytes(self._buffer), bytearray()
            return frames, rest
        return frames, b""

    def feed(self, data: bytes | memoryview) -> list[dict[str, Any]]:
        """Add received bytes; return the frames they complete, in order."""
        self._buffer += data
        frames: list[dict[str, Any]] = []
        start = 0
        buf = self._buffer
        while len(buf) - start >= HEADER.size:
            (size,) = HEADER.unpack_from(buf, start)
            if size > MAX_FRAME:
                raise FrameError(f"frame of {size} bytes exceeds {MAX_FRAME}")
            end = start + HEADER.size + size
            if len(buf) < end:
                break
            body = bytes(buf[start + HEADER.size : end])
            start = end
            try:
                frame = decode_plain(body) if self._plain else pickle.loads(body)
                frames.append(frame)
                if self._stop_at_raw and frame.get("raw"):
                    break
            except Exception as exc:
                # Drop the bad frame (it is consumed) and report it; the caller decides
                # whether the stream is still worth reading.
                del buf[:start]
                error = exc if isinstance(exc, FrameError) else FrameError(str(exc))
                error.frames = frames  # type: ignore[attr-defined]
                raise error from exc
        if start:
            del buf[:start]
        return frames


def read_frames(fd: int, chunk: int = 1 << 20) -> Iterator[dict[str, Any]]:
    """The plain frames read from the pipe ``fd``, each once it is whole, until the pipe
    closes (or cannot be read any more)."""
    decoder = FrameDecoder(plain=True)
    while True:
        try:
            data = os.read(fd, chunk)
        except OSError:
            return
        if not data:
            return
        yield from decoder.feed(data)
