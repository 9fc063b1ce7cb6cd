"""Every error skyward raises, under one base.

SkywardError
├── UsageError          bad magic arguments or a call that makes no sense now
├── ProvisionError      a provider could not create, find or destroy something
│   └── CapacityError   the provider has no capacity for the offer asked for
├── TransportError      SSH could not connect, authenticate or stay up
├── BootstrapError      a bootstrap phase failed on a node
├── AgentError          the agent on an instance broke the protocol or went away
├── CellTimeout         a remote cell ran past its --timeout (also a TimeoutError)
├── InstancePreemptedError  the node a cell ran on was lost
├── LedgerError         the ledger of launched instances cannot be kept safely
├── RemoteCrash         the process running a cell died (the instance is fine)
└── RemoteError         a cell raised on an instance (carries the remote traceback)
    └── CompositeError  a cell raised on several nodes

A remote exception of a builtin type is raised as a class that subclasses both
``RemoteError`` and that type (named like it), so ``except ValueError`` works; an
interrupted remote cell raises a ``KeyboardInterrupt`` showing the remote traceback.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "AgentError",
    "BootstrapError",
    "CapacityError",
    "CellTimeout",
    "CompositeError",
    "InstancePreemptedError",
    "LedgerError",
    "ProvisionError",
    "RemoteCrash",
    "RemoteError",
    "RemoteInterrupt",
    "SkywardError",
    "TransportError",
    "UsageError",
]


class SkywardError(Exception):
    """Base of every error skyward raises.

    In a notebook it shows as its message, not as a traceback through skyward's own
    plumbing, which would only hide what went wrong.
    """

    def _render_traceback_(self) -> list[str]:
        return [f"\x1b[31m{type(self).__name__}\x1b[0m: {self}"]


class UsageError(SkywardError):
    """Bad magic arguments, or a call that makes no sense in the current state."""


class ProvisionError(SkywardError):
    """A provider could not create, find or destroy something."""


class CapacityError(ProvisionError):
    """The provider has no capacity for the offer asked for."""


class LedgerError(SkywardError):
    """The ledger of launched instances cannot be read, or written without losing some."""


class TransportError(SkywardError):
    """SSH could not connect, authenticate or stay up."""


class BootstrapError(SkywardError):
    """A bootstrap phase failed on a node; carries the node, phase and output tail."""

    def __init__(self, node: int, phase: str, message: str, output: str = "") -> None:
        self.node = node
        self.phase = phase
        self.output = output
        text = f"bootstrap of node {node} failed in phase '{phase}': {message}"
        if output:
            text += "\n--- last output ---\n" + output
        super().__init__(text)


class AgentError(SkywardError):
    """The agent on an instance broke the protocol or went away."""


class CellTimeout(SkywardError, TimeoutError):
    """A remote cell ran past its ``--timeout`` and was interrupted (or restarted)."""

    def __init__(self, seconds: float, nodes: list[int]) -> None:
        self.seconds = seconds
        self.nodes = nodes
        where = f" on node(s) {', '.join(map(str, nodes))}" if nodes else ""
        super().__init__(f"the cell timed out after {seconds:g} s{where} and was stopped")


class InstancePreemptedError(SkywardError):
    """The node a cell ran on was lost (preempted, or stopped answering)."""

    def __init__(self, node: int, reason: str) -> None:
        self.node = node
        self.reason = reason
        super().__init__(f"node {node} was lost while the cell ran: {reason}")


@dataclass(eq=False, repr=False)  # an exception: equal only to itself, shown by its message
class RemoteCrash(SkywardError):
    """The process that ran a cell on a node died: it exited, was killed by a signal or by
    the kernel's OOM killer. The instance is fine; a fresh process (with no variables)
    runs the next cell. ``stderr`` is the end of what it wrote to stderr."""

    node: int
    detail: str
    status: int | None = None
    signal: str = ""
    oom: bool = False
    stderr: str = ""
    restarted: bool = True

    def __post_init__(self) -> None:
        after = (
            "this node's variables are gone; a fresh process runs the next cell"
            if self.restarted
            else "it could not be restarted"
        )
        super().__init__(f"node {self.node}: {self.detail}; {after}")

    def _render_traceback_(self) -> list[str]:
        lines = [f"\x1b[31m{type(self).__name__}\x1b[0m: {self}"]
        tail = self.stderr.rstrip("\n")
        if tail:
            lines += ["--- the end of its stderr ---", *tail.splitlines()[-20:]]
        return lines


class RemoteError(SkywardError):
    """A cell raised on an instance.

    Built from plain data, never from the remote object: ``ename`` (the type's name),
    ``evalue`` (its message), ``traceback`` (IPython's rendering on the node, with the
    cell's own line numbers) and ``frames`` (``(file, line, function, source)``).
    :meth:`load` unpickles the remote exception itself, on request only: that runs
    whatever its pickle says, so do it only for instances you trust as your own machine.
    """

    def __init__(
        self,
        node: int,
        ename: str,
        evalue: str,
        traceback: list[str],
        frames: list[tuple[str, int, str, str]] | None = None,
        pickled: bytes | None = None,
        prefixed: bool = True,
    ) -> None:
        self.node = node
        self.ename = ename
        self.evalue = evalue
        self.traceback = traceback
        self.frames = frames or []
        self.prefixed = prefixed
        self._pickled = pickled
        super().__init__(evalue)

    def __str__(self) -> str:
        return self.evalue if not self.prefixed else f"[node {self.node}] {self.evalue}"

    def load(self) -> BaseException:
        """The remote exception object itself (unpickled now: trust the instance first)."""
        if self._pickled is None:
            raise SkywardError(f"the remote {self.ename} could not be pickled on the node")
        import cloudpickle

        return cloudpickle.loads(self._pickled)  # type: ignore[no-any-return]

    def _render_traceback_(self) -> list[str]:
        if not self.prefixed:  # exactly what IPython on the node rendered
            return list(self.traceback) or [f"{self.ename}: {self.evalue}"]
        lines = "".join(self.traceback).rstrip("\n").split("\n") if self.traceback else []
        return [f"\x1b[31m[node {self.node}] remote {self.ename}\x1b[0m", *lines]


class RemoteInterrupt(KeyboardInterrupt):
    """A remote cell was interrupted; shows where each node stopped (IPython's view)."""

    def __init__(self, lines: list[str], message: str = "the remote cell was interrupted"):
        self.lines = lines
        super().__init__(message)

    def _render_traceback_(self) -> list[str]:
        return self.lines


# The kernel reports it by this name, as it reports a local interrupt.
RemoteInterrupt.__name__ = RemoteInterrupt.__qualname__ = "KeyboardInterrupt"


class CompositeError(RemoteError):
    """A cell raised on several nodes; lists each, the first few in full."""

    shown_in_full = 3

    def __init__(self, errors: list[RemoteError]) -> None:
        self.errors = errors
        first = errors[0]
        super().__init__(first.node, first.ename, first.evalue, first.traceback, first.frames)
        nodes = ", ".join(str(e.node) for e in errors)
        self.evalue = f"cell failed on nodes {nodes}: " + "; ".join(
            f"[node {e.node}] {e.ename}: {e.evalue}" for e in errors
        )
        self.prefixed = False

    def _render_traceback_(self) -> list[str]:
        lines = [f"\x1b[31mcell failed on {len(self.errors)} nodes\x1b[0m"]
        for i, error in enumerate(self.errors):
            if i < self.shown_in_full:
                lines.extend(error._render_traceback_())
            else:
                lines.append(f"[node {error.node}] {error.ename}: {error.evalue}")
        return lines


class NodeUnavailable(SkywardError):
    """A cell asked for a node that cannot take it: not in the cluster, lost, or (with
    ``--no-wait``, or past ``--timeout``) still being replaced. The cell ran nowhere."""

    def __init__(self, message: str, nodes: list[int]) -> None:
        self.nodes = nodes
        super().__init__(message)
