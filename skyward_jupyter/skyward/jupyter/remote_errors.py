"""Remote exceptions, raised in the kernel from plain data.

Nothing an instance sends is unpickled here: on community hosts the host's operator is
root on the instance, and the kernel holds the user's cloud credentials. A remote
exception of a builtin type (looked up by name among the builtins, never loaded) is
raised as a class that subclasses both ``RemoteError`` and that type, so ``except
ValueError`` works; any other type is a ``RemoteError`` named after it. Either way the
traceback shown is IPython's own, from the node. ``RemoteError.load()`` unpickles the
real object when the user asks for it.
"""

from __future__ import annotations

import builtins
from functools import cache

from ..errors import CompositeError, RemoteError, RemoteInterrupt
from ..protocol import ErrorInfo

__all__ = ["combine", "interrupted", "rebuild", "where"]


@cache
def _remote_class(name: str, builtin: bool) -> type[RemoteError]:
    """A ``RemoteError`` named ``name``, mixed with the builtin type of that name (if
    ``builtin``) so that ``except`` clauses for it work."""
    found = getattr(builtins, name, None) if builtin else None
    # IPython shows a SyntaxError its own way, without _render_traceback_: keep it apart
    if not (isinstance(found, type) and issubclass(found, Exception)) or issubclass(
        found, SyntaxError
    ):
        if not name.isidentifier():
            return RemoteError
        return type(name, (RemoteError,), {"__module__": "skyward.errors"})
    for base in found.__mro__:
        if not issubclass(base, Exception) or getattr(builtins, base.__name__, None) is not base:
            continue
        try:
            cls = type(name, (RemoteError, base), {"__module__": "skyward.errors"})
            cls(0, name, "", [])  # some builtins need arguments of their own
        except TypeError:
            continue
        return cls
    return RemoteError


def rebuild(node: int, error: ErrorInfo, prefixed: bool) -> RemoteError:
    """The local exception for a node's error."""
    cls = _remote_class(error.ename, error.builtin)
    return cls(
        node,
        error.ename,
        error.evalue,
        error.traceback,
        list(error.frames),
        error.pickled,
        prefixed,
    )


def combine(errors: list[tuple[int, ErrorInfo]], prefixed: bool) -> RemoteError:
    """One node's error as itself; several as one ``CompositeError`` listing each."""
    if len(errors) == 1:
        node, error = errors[0]
        return rebuild(node, error, prefixed)
    return CompositeError([rebuild(node, error, True) for node, error in errors])


def where(error: ErrorInfo) -> str:
    """``KeyboardInterrupt at line N: source``, from the last frame of the cell."""
    for filename, line, _, source in reversed(error.frames):
        if filename.startswith("<ipython-input-"):
            return f"{error.ename} at line {line}: {source.strip()}"
    return error.ename


def interrupted(errors: list[tuple[int, ErrorInfo]], prefixed: bool) -> RemoteInterrupt:
    """The interrupt to raise: each node's own traceback of where it stopped."""
    lines: list[str] = []
    for node, error in errors:
        shown = "".join(error.traceback).rstrip("\n").split("\n") if error.traceback else []
        if prefixed:
            lines.append(f"\x1b[31m[node {node}] {where(error)}\x1b[0m")
        lines.extend(shown)
    return RemoteInterrupt(lines or ["KeyboardInterrupt"])
