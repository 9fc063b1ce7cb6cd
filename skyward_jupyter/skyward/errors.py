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
└── RemoteError         a cell raised on an instance (carries the remote traceback)
    └── CompositeError  a cell raised on several nodes
"""

from __future__ import annotations

__all__ = [
    "AgentError",
    "BootstrapError",
    "CapacityError",
    "CellTimeout",
    "CompositeError",
    "InstancePreemptedError",
    "LedgerError",
    "ProvisionError",
    "RemoteError",
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


class RemoteError(SkywardError):
    """A cell raised on an instance.

    Carries the remote exception's type name (``ename``), message (``evalue``) and the
    remote traceback text, with the cell's own line numbers. IPython shows the remote
    traceback through ``_render_traceback_`` instead of our plumbing.
    """

    def __init__(self, node: int, ename: str, evalue: str, traceback: list[str]) -> None:
        self.node = node
        self.ename = ename
        self.evalue = evalue
        self.traceback = traceback
        super().__init__(f"[node {node}] {ename}: {evalue}")

    def _render_traceback_(self) -> list[str]:
        header = f"\x1b[31m[node {self.node}] remote {self.ename}\x1b[0m"
        return [header, *"".join(self.traceback).rstrip("\n").split("\n")]


class CompositeError(RemoteError):
    """A cell raised on several nodes; lists each, the first few in full."""

    shown_in_full = 3

    def __init__(self, errors: list[RemoteError]) -> None:
        self.errors = errors
        first = errors[0]
        super().__init__(first.node, first.ename, first.evalue, first.traceback)
        nodes = ", ".join(str(e.node) for e in errors)
        self.args = (
            f"cell failed on nodes {nodes}: "
            + "; ".join(f"[node {e.node}] {e.ename}: {e.evalue}" for e in errors),
        )

    def _render_traceback_(self) -> list[str]:
        lines = [f"\x1b[31mcell failed on {len(self.errors)} nodes\x1b[0m"]
        for i, error in enumerate(self.errors):
            if i < self.shown_in_full:
                lines.extend(error._render_traceback_())
            else:
                lines.append(f"[node {error.node}] {error.ename}: {error.evalue}")
        return lines
