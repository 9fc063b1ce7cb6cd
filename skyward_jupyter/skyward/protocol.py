"""The agent protocol: every message between the kernel, the supervisor and the worker.

Three parties speak it. The kernel's client sends requests to the supervisor on the
instance (over an SSH channel); the supervisor hands cells to its worker (over pipes) and
numbers what comes back into frames for the kernel. Each message is a frozen dataclass
here; on the wire it is a plain dict (``{"k": kind, field: value, ...}``, see ``wire``),
so an instance can never send the kernel an object that runs code when loaded.

Standard library only: uploaded to instances with the agent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .messages import (
    Frame,
    FrameReader,
    Message,
    ProtocolError,
    decode,
    decode_frame,
    encode,
    pack,
)
from .messages import message as _message

__all__ = [
    "Clear",
    "Configure",
    "Crash",
    "Display",
    "Done",
    "ErrorInfo",
    "Hello",
    "HelloReply",
    "Interrupt",
    "Kill",
    "Lines",
    "Message",
    "Metrics",
    "Missing",
    "Ping",
    "Pong",
    "ProtocolError",
    "Refresh",
    "Place",
    "Placed",
    "Put",
    "Fetch",
    "Frame",
    "FrameReader",
    "Result",
    "Run",
    "Serve",
    "Serving",
    "Shutdown",
    "Started",
    "Stored",
    "Stream",
    "WorkerReady",
    "Bye",
    "decode",
    "decode_frame",
    "encode",
    "pack",
]

Line = tuple[str, str, bool]
"""``(stream, text, overwrite)``: ``overwrite`` replaces the stream's previous line."""


# -- the kernel to the supervisor (and the supervisor to the worker) -------------------


@_message("hello")
class Hello(Message):
    """Opens a channel; frames after ``since`` are replayed."""

    since: int = 0


@_message("run")
class Run(Message):
    """Run a cell. ``count`` is the kernel's execution count (``In[count]`` on the node
    too); ``push`` maps names to what is put in the namespace first: a small variable's
    cloudpickle inline, a large one as a reference to a stored blob (``{"key": k,
    "parts": [[offset, length], ...]}``: the pickle stream, then its out-of-band buffers);
    ``pull`` names variables sent back pickled in ``Done.pulled``; output past
    ``max_output`` characters is cut. ``interrupted``: the cell was interrupted while it
    waited its turn (the supervisor says so): it stops as it starts, running nothing."""

    task: str
    code: str
    count: int = 0
    push: dict[str, Any] | None = None
    pull: tuple[str, ...] = ()
    max_output: int = 10_000_000
    interrupted: bool = False


@_message("interrupt")
class Interrupt(Message):
    """``KeyboardInterrupt`` in ``task`` if it runs; a queued one fails as it starts."""

    task: str


@_message("kill")
class Kill(Message):
    """The cell did not stop: kill the worker (its variables are lost) and start afresh."""

    task: str


@_message("configure")
class Configure(Message):
    """Environment variables for the cells, what ``skyward.node()`` answers, and the
    traceback colours of the kernel's IPython."""

    env: dict[str, str] = field(default_factory=dict)
    node: dict[str, Any] = field(default_factory=dict)
    colors: str = ""


@_message("refresh")
class Refresh(Message):
    """Before a cell: the kernel's local code changed on disk here. ``cwd`` is the cells'
    working directory (put first on ``sys.path``, as the kernel has its own folder);
    ``changed`` the files sent since the last cell, whose modules are reloaded (both
    relative to the node's home)."""

    cwd: str = ""
    changed: tuple[str, ...] = ()


@_message("put")
class Put(Message):
    """A piece of the blob ``key`` (``size`` bytes in all) from ``offset``: its ``raw``
    bytes follow the frame on the channel as they are (not pickled, not copied into the
    frame). Pieces come in order; the last completes the blob."""

    key: str
    size: int
    offset: int
    raw: int


@_message("fetch")
class Fetch(Message):
    """Fetch blob ``key`` from the cluster's relay at ``host:port`` (over the private
    network, with the cluster's ``token``), check it against the relay's sha256, keep it."""

    key: str
    size: int
    host: str
    port: int
    token: str
    timeout: float = 2.0


@_message("place")
class Place(Message):
    """Copy blob ``key`` to ``path`` (relative to the node's home, its folders made) with
    permission bits ``mode``: a file of ``%skyward sync``/``put`` that the head relayed."""

    key: str
    path: str
    mode: int


@_message("serve")
class Serve(Message):
    """Serve this node's blobs to the cluster: listen on ``host`` for fetches that show
    ``token``."""

    host: str
    token: str


@_message("ping")
class Ping(Message):
    """A heartbeat (the supervisor answers it itself)."""

    id: int


@_message("shutdown")
class Shutdown(Message):
    """Stop the agent: the running cell is interrupted, queued ones are dropped."""


# -- the worker to the supervisor (then forwarded as frames) ---------------------------


@_message("stream")
class Stream(Message):
    """What the worker's ``sys.stdout``/``sys.stderr`` received, as ``(name, text)``."""

    chunks: list[tuple[str, str]]


@_message("worker")
class WorkerReady(Message):
    """A worker started and can run cells."""

    pid: int
    ipython: str = ""


@_message("started")
class Started(Message):
    """A cell began on the worker."""

    task: str


@_message("display")
class Display(Message):
    """A rich output (``display()``, a figure), in order with the cell's lines."""

    task: str | None
    data: dict[str, Any]
    metadata: dict[str, Any] = field(default_factory=dict)
    transient: dict[str, Any] = field(default_factory=dict)
    update: bool = False


@_message("clear")
class Clear(Message):
    """``clear_output(wait)`` on the node."""

    task: str | None
    wait: bool = False


@_message("result")
class Result(Message):
    """The value of the cell's last expression, formatted by the node's IPython."""

    task: str
    count: int
    data: dict[str, Any]
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """A cell's exception as plain data.

    ``traceback`` is IPython's own rendering (the lines a local cell shows), ``frames``
    the cell's frames as ``(filename, line, function, source)``; ``builtin`` says the type
    is a builtin exception (so the kernel can raise that type without unpickling);
    ``pickled`` is the exception's cloudpickle, loaded only where the user asks.
    """

    ename: str
    evalue: str
    traceback: list[str] = field(default_factory=list)
    frames: list[tuple[str, int, str, str]] = field(default_factory=list)
    module: str = ""
    builtin: bool = False
    pickled: bytes | None = None


@_message("done", error=ErrorInfo)
class Done(Message):
    """A cell ended on the worker; ``dropped`` counts output characters cut."""

    task: str
    ok: bool
    duration: float
    error: ErrorInfo | None = None
    pulled: bytes | None = None
    pull_error: str | None = None
    dropped: int = 0


@_message("metrics")
class Metrics(Message):
    """Samples ``(name, value, timestamp)``: the machine's and ``skyward.metric()``'s."""

    points: list[tuple[str, float, float]]


# -- the supervisor to the kernel ------------------------------------------------------


@_message("hello-reply")
class HelloReply(Message):
    """The supervisor's answer to ``Hello``: ``seq`` is the newest frame, ``oldest`` the
    oldest still kept; ``running`` the task still running, ``worker`` the worker's state
    (``ready``, ``starting`` or ``failed: why``)."""

    pid: int
    python: str
    cwd: str
    node: int
    nodes: int
    cluster: str
    seq: int = 0
    oldest: int = 1
    running: str | None = None
    worker: str = "starting"


@_message("lines")
class Lines(Message):
    """A batch of a node's output lines.

    ``partial`` names the streams whose last line here is unfinished (no newline yet: a
    progress bar). ``task`` is the cell they belong to; None for output written between
    cells, with ``after`` the cell that ran last. ``panel_only`` lines are past the cell's
    output budget: the panel's log shows them, the cell does not.
    """

    task: str | None
    lines: list[Line]
    partial: tuple[str, ...] = ()
    after: str | None = None
    panel_only: bool = False


@_message("crash")
class Crash(Message):
    """The worker died (the instance is fine): how, and the end of what it wrote.

    ``task`` is the cell it was running (None between cells). ``status`` is its exit
    status, or ``signal`` the signal that killed it; ``oom`` says the kernel's OOM killer
    did. ``restarted`` says a fresh worker is starting.
    """

    task: str | None
    pid: int
    status: int | None = None
    signal: int | None = None
    signame: str = ""
    oom: bool = False
    killed: bool = False
    detail: str = ""
    stderr_tail: str = ""
    restarted: bool = True


@_message("stored")
class Stored(Message):
    """The node keeps blob ``key`` (``ok``), or why it could not (``error``)."""

    key: str
    ok: bool
    error: str = ""


@_message("placed")
class Placed(Message):
    """The file ``path`` was written (``ok``), or why it was not (``error``)."""

    path: str
    ok: bool
    error: str = ""


@_message("missing")
class Missing(Message):
    """Cell ``task`` was not started: the node lacks these blobs (send them, then the
    cell again)."""

    task: str
    keys: list[str]


@_message("serving")
class Serving(Message):
    """The relay listens at ``host:port`` (``port`` 0 and ``error``: it could not)."""

    host: str
    port: int
    error: str = ""


@_message("pong")
class Pong(Message):
    """The answer to ``Ping``, with the supervisor's clock."""

    id: int
    time: float


@_message("bye")
class Bye(Message):
    """The supervisor is stopping (after ``Shutdown``)."""
