"""After a remote cell: each node's answer sorted into what the cell shows and raises.

Kept apart from the magics so the rules read in one place: a node's error becomes a
local exception built from plain data, a dead worker a ``RemoteCrash`` (not a
preemption: the instance is fine), a lost node an ``InstancePreemptedError``, and an
interrupted node the line where it stopped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import InstancePreemptedError, RemoteCrash
from ..protocol import Crash, Done, ErrorInfo
from .output import CellOutput
from .remote_errors import where
from .variables import describe_size, unpickle_pulled

__all__ = ["Outcome", "remote_source", "settle"]


@dataclass
class Outcome:
    """What the nodes' answers add up to."""

    errors: list[tuple[int, ErrorInfo]] = field(default_factory=list)
    crashes: list[RemoteCrash] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    pulled: dict[int, dict[str, Any]] = field(default_factory=dict)
    interrupts: list[tuple[int, ErrorInfo]] = field(default_factory=list)
    stopped: list[int] = field(default_factory=list)


def remote_source(line: str, body: str) -> str:
    """The code a node runs: the body under a comment standing for the magic's line, so
    the node's tracebacks carry the cell's own line numbers. A body that is a cell magic
    itself (``%%time``) must stay first, so it goes as it is."""
    if body.lstrip().startswith("%%"):
        return body
    return f"# %%skyward {line}\n{body}"


def settle(cell: Any, view: CellOutput, interrupted: bool, prefixed: bool, budget: int) -> Outcome:
    """Sort each node's answer (``Done``, ``Crash`` or an exception) into an outcome."""
    out = Outcome()
    stopping = interrupted or cell.timed_out
    for node in cell.nodes:
        answer = cell.results.get(node.node)
        if isinstance(answer, Crash):
            if answer.killed:
                out.stopped.append(node.node)
                view.note(
                    node.node, f"{answer.detail}: its process was killed; its variables are lost"
                )
                continue
            out.crashes.append(
                RemoteCrash(
                    node.node,
                    answer.detail,
                    answer.status,
                    answer.signame,
                    answer.oom,
                    answer.stderr_tail,
                    answer.restarted,
                )
            )
        elif isinstance(answer, InstancePreemptedError):
            out.lost.append(str(answer))
            view.note(node.node, f"lost: {answer.reason}")
        elif isinstance(answer, BaseException):
            out.lost.append(f"node {node.node}: {answer}")
        elif isinstance(answer, Done):
            _done(node.node, answer, view, stopping, cell.timed_out, budget, out)
    return out


def _done(
    node: int,
    answer: Done,
    view: CellOutput,
    stopping: bool,
    timed_out: bool,
    budget: int,
    out: Outcome,
) -> None:
    if answer.dropped:
        view.note(
            node,
            f"… {describe_size(answer.dropped)} of output not shown (over --max-output "
            f"{describe_size(budget)}; the panel's log has its end)",
        )
    error = answer.error
    if error is None:
        if answer.pull_error:
            out.lost.append(f"node {node}: --pull: {answer.pull_error}")
        elif answer.pulled:
            out.pulled[node] = unpickle_pulled(answer.pulled)
        return
    if stopping and error.ename == "KeyboardInterrupt":
        out.interrupts.append((node, error))
        out.stopped.append(node)
        if timed_out:
            view.note(node, where(error))
    else:
        out.errors.append((node, error))
