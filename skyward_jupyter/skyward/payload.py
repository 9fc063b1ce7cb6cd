"""A pushed variable as it travels: its pickle in parts, named by their content's hash.

A variable is pickled with protocol 5, its large buffers (numpy arrays) kept out of band
rather than copied into one bytes object. Its key is the blake3 hash of what is sent (the
parts and their lengths), computed each time it is sent, never trusted from ``id()``: a
mutated array has a new key, an unchanged one the key the nodes already hold, and then
only the key travels. blake3 runs on every core the hash can use (here ~0.1 s/GB with 2
threads, ~0.18 s/GB with one); the nodes check what they receive with the standard
library's sha256 (``agent.blobs.DIGEST``), computed here only when the bytes are sent.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import blake3

__all__ = ["ALIGN", "INLINE", "Payload", "make_payload"]

ALIGN = 64  # each part starts at a multiple of this in the blob (arrays stay aligned)
INLINE = 64 * 1024  # bytes: smaller variables travel inside the cell's message
THREADED = 1 << 20  # bytes: hashes of larger payloads use every core


@dataclass(eq=False)
class Payload:
    """One variable's pickle: ``parts`` (the stream, then its out-of-band buffers) laid
    out in a blob of ``size`` bytes at ``layout`` offsets, named ``key``."""

    name: str
    parts: list[memoryview]
    layout: list[tuple[int, int]]
    size: int
    key: str
    on_sent: Callable[[int], None] | None = None
    """Told the bytes of each piece once it is on its way (a file's progress bar)."""

    def sent(self, count: int) -> None:
        if self.on_sent is not None:
            self.on_sent(count)

    @property
    def inline(self) -> bool:
        """Small enough to travel inside the cell's message."""
        return self.size <= INLINE and len(self.parts) == 1

    def inline_bytes(self) -> bytes:
        """The pickle stream alone (only when there are no out-of-band buffers)."""
        return bytes(self.parts[0])

    def reference(self) -> dict[str, Any]:
        """What the cell's message carries instead of the bytes."""
        return {"key": self.key, "parts": [list(p) for p in self.layout]}

    def pieces(self, chunk: int) -> list[tuple[int, memoryview | bytes]]:
        """The blob's bytes as ``(offset, piece)``, each at most ``chunk`` bytes, padding
        between parts included; no copy of the parts."""
        out: list[tuple[int, memoryview | bytes]] = []
        position = 0
        for (offset, length), part in zip(self.layout, self.parts, strict=True):
            if offset > position:
                out.append((position, bytes(offset - position)))
                position = offset
            for start in range(0, length, chunk):
                out.append((offset + start, part[start : start + chunk]))
            position = offset + length
        return out


def make_payload(name: str, stream: bytes | memoryview, buffers: list[Any]) -> Payload:
    """The payload of a pickle ``stream`` and its out-of-band ``buffers``
    (``pickle.PickleBuffer``s), hashed."""
    parts = [memoryview(stream).cast("B")]
    for buffer in buffers:
        raw = buffer.raw() if hasattr(buffer, "raw") else memoryview(buffer)
        parts.append(raw.cast("B") if raw.format != "B" or raw.ndim != 1 else raw)
    layout: list[tuple[int, int]] = []
    position = 0
    for part in parts:
        position = -(-position // ALIGN) * ALIGN
        layout.append((position, part.nbytes))
        position += part.nbytes
    size = position
    hasher = blake3.blake3(
        struct.pack(f"!{2 * len(layout)}Q", *(n for pair in layout for n in pair)),
        max_threads=blake3.blake3.AUTO if size >= THREADED else 1,
    )
    for part in parts:
        hasher.update(part)
    return Payload(name, parts, layout, size, hasher.hexdigest(length=32))
