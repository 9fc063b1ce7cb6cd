"""Remote exceptions raised locally as themselves.

Where the remote exception unpickles here (a builtin, or a class importable in the
kernel, or one defined in the notebook), the cell raises that very type, so
``except KeyError`` works; its traceback shows the remote frames with the cell's own line
numbers. Otherwise the cell raises ``RemoteError`` carrying the type's name.
"""

from __future__ import annotations

from typing import Any

import cloudpickle

from ..errors import CompositeError, RemoteError

__all__ = ["combine", "rebuild"]


def rebuild(node: int, error: dict[str, Any]) -> BaseException:
    """The local exception for a node's error frame."""
    remote = RemoteError(node, error["ename"], error["evalue"], error["traceback"])
    pickled = error.get("pickled")
    if not pickled:
        return remote
    try:
        exc = cloudpickle.loads(pickled)
    except Exception:
        return remote
    if not isinstance(exc, Exception):
        return remote
    try:
        exc._render_traceback_ = remote._render_traceback_  # type: ignore[attr-defined]
        exc.remote_traceback = remote.traceback  # type: ignore[attr-defined]
        exc.node = node  # type: ignore[attr-defined]
    except (AttributeError, TypeError):
        return remote
    return exc


def combine(errors: list[tuple[int, dict[str, Any]]]) -> BaseException:
    """One node's error as itself; several as one ``CompositeError`` listing each."""
    if len(errors) == 1:
        node, error = errors[0]
        return rebuild(node, error)
    return CompositeError(
        [RemoteError(node, e["ename"], e["evalue"], e["traceback"]) for node, e in errors]
    )
