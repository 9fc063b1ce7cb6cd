"""Variables between the kernel and a node's namespace: a pushed variable loaded from its
blob, pulled ones pickled back. Runs in the worker (cloudpickle is there)."""

from __future__ import annotations

import mmap
import os
from typing import Any

__all__ = ["load_blob", "pull"]


def load_blob(path: str, parts: list[list[int]]) -> Any:
    """A pushed variable from its blob: the pickle stream, its buffers read in place.

    The file is mapped copy-on-write: arrays are backed by the page cache (no copy, no
    second read of the bytes) and stay writable; a write copies only the pages it
    touches, and never reaches the stored blob.
    """
    import pickle

    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        mapped = mmap.mmap(handle.fileno(), size, flags=mmap.MAP_PRIVATE) if size else bytearray()
    view = memoryview(mapped)
    (start, length), buffers = parts[0], parts[1:]
    return pickle.loads(view[start : start + length], buffers=[view[o : o + n] for o, n in buffers])


def pull(namespace: dict[str, Any], names: tuple[str, ...]) -> tuple[bytes | None, str | None]:
    """``names`` of ``namespace`` pickled together, or why not."""
    missing = [n for n in names if n not in namespace]
    if missing:
        return None, f"not defined on this node: {', '.join(missing)}"
    try:
        import cloudpickle

        return cloudpickle.dumps({n: namespace[n] for n in names}), None
    except Exception as exc:
        return None, f"cannot pickle {', '.join(names)}: {type(exc).__name__}: {exc}"
