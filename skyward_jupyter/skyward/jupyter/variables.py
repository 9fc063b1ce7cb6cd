"""Variables between the kernel and the nodes: which to send with a cell, and bringing
values back.

A cell's free names (read but never bound in the cell) that exist in the kernel's
namespace are sent with it, so a remote cell sees the kernel's data as a local cell would.
Modules, IPython's own names and private names stay home.
"""

from __future__ import annotations

import ast
import asyncio
import builtins
import inspect
import io
import sys
from collections import ChainMap
from functools import cache
from typing import Any

import cloudpickle

from ..errors import SkywardError
from ..payload import INLINE, Payload, make_payload

__all__ = ["PushError", "free_names", "pickle_push", "select_push"]

IPYTHON_NAMES = frozenset({"In", "Out", "get_ipython", "exit", "quit", "display", "open", "help"})
LARGE_PUSH = 100_000_000  # bytes: "over 100 MB" warns


class PushError(SkywardError):
    """A variable the cell needs cannot be sent to the nodes."""


class _Names(ast.NodeVisitor):
    """Collects the names a piece of code reads and the names it binds, at any depth."""

    def __init__(self) -> None:
        self.read: list[str] = []
        self.bound: set[str] = set()

    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Load):
            self.read.append(node.id)
        else:
            self.bound.add(node.id)

    def _bind_function(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> None:
        args = node.args
        for arg in (*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg):
            if arg is not None:
                self.bound.add(arg.arg)

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self.bound.add(node.name)
        self._bind_function(node)
        self.generic_visit(node)

    visit_AsyncFunctionDef = visit_FunctionDef  # type: ignore[assignment]

    def visit_Lambda(self, node: ast.Lambda) -> None:
        self._bind_function(node)
        self.generic_visit(node)

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self.bound.add(node.name)
        self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.bound.add((alias.asname or alias.name).split(".")[0])

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        for alias in node.names:
            self.bound.add(alias.asname or alias.name)

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        if node.name:
            self.bound.add(node.name)
        self.generic_visit(node)

    def visit_arg(self, node: ast.arg) -> None:
        self.bound.add(node.arg)


def free_names(code: str) -> list[str]:
    """Names ``code`` reads and never binds, in order of first use (none if it does not
    parse: the node reports the syntax error)."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return []
    names = _Names()
    names.visit(tree)
    seen: dict[str, None] = {}
    for name in names.read:
        if name not in names.bound and not hasattr(builtins, name):
            seen.setdefault(name, None)
    return list(seen)


def select_push(
    code: str, namespace: dict[str, Any], forced: list[str], automatic: bool
) -> dict[str, Any]:
    """The variables to send: the cell's free names found in ``namespace`` (when
    ``automatic``) and every name in ``forced`` (which must exist)."""
    missing = [name for name in forced if name not in namespace]
    if missing:
        raise PushError(f"--push: no variable {', '.join(missing)} in the kernel")
    chosen = {name: namespace[name] for name in forced}
    if automatic:
        for name in free_names(code):
            if name in chosen or name not in namespace:
                continue
            if name.startswith("_") or name in IPYTHON_NAMES:
                continue
            value = namespace[name]
            if inspect.ismodule(value):
                continue
            chosen[name] = value
    return chosen


async def pickle_push(values: dict[str, Any]) -> dict[str, Payload]:
    """Each variable pickled on its own (so a failure names it, and nothing is pickled
    twice), with protocol 5 and its large buffers out of band, then hashed (off the loop
    when large). A variable that cannot be pickled fails here, before anything runs."""
    parts: dict[str, Payload] = {}
    for name, value in values.items():
        buffers: list[Any] = []
        try:
            stream = _dumps(value, buffers.append)
        except Exception as exc:
            raise PushError(
                f"cannot send variable '{name}' ({type(value).__name__}) to the nodes: "
                f"{type(exc).__name__}: {exc}. Leave it out with --no-push, or make it "
                "on the nodes instead"
            ) from None
        large = len(stream) + sum(memoryview(b).nbytes for b in buffers) > INLINE
        if buffers and not large:  # small: in band, so it travels inside the cell
            stream, buffers = cloudpickle.dumps(value, protocol=5), []
        if large:
            parts[name] = await asyncio.to_thread(make_payload, name, stream, buffers)
        else:
            parts[name] = make_payload(name, stream, buffers)
    return parts


def _dumps(value: Any, buffer_callback: Any) -> bytes:
    """cloudpickle with protocol 5, large buffers out of band (torch tensors too)."""
    file = io.BytesIO()
    torch = sys.modules.get("torch")
    kind = cloudpickle.Pickler if torch is None else _tensor_pickler(torch.Tensor)
    kind(file, protocol=5, buffer_callback=buffer_callback).dump(value)
    return file.getvalue()


@cache
def _tensor_pickler(tensor: type) -> type:
    """cloudpickle's pickler that reduces tensors with ``_reduce_tensor`` (the pickler
    reads its dispatch table when made, so it is a class attribute)."""
    table = ChainMap({tensor: _reduce_tensor}, cloudpickle.Pickler.dispatch_table)
    return type("TensorPickler", (cloudpickle.Pickler,), {"dispatch_table": table})


def _reduce_tensor(tensor: Any) -> Any:
    """A plain CPU tensor as ``torch.from_numpy(array)``: its memory then travels out of
    band (torch's own pickling copies it into the stream). Others pickle as torch does."""
    try:
        if (
            tensor.device.type == "cpu"
            and not tensor.requires_grad
            and tensor.layout is sys.modules["torch"].strided
            and not tensor.is_quantized
            and tensor.is_contiguous()
        ):
            return sys.modules["torch"].from_numpy, (tensor.numpy(),)
    except (TypeError, RuntimeError):  # a dtype numpy lacks (bfloat16), a subclass
        pass
    return tensor.__reduce_ex__(5)


def describe_size(size: int) -> str:
    """``123.4 MB``."""
    return f"{size / 1e6:,.1f} MB"


def unpickle_pulled(data: bytes) -> dict[str, Any]:
    """Values pulled from a node (the node is trusted as the kernel's own machine is)."""
    return cloudpickle.loads(data)
