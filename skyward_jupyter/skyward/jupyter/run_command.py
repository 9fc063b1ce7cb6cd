"""``%%skyward run``: one cell on the cluster's nodes, its output streamed into the cell.

The nodes are chosen first (a node being replaced is waited for, or fails the cell with
``--no-wait``: a cell never runs on fewer nodes than it is for), then the variables the
cell reads are pickled and sent where they are missing, the kernel's local modules
follow, and each node's answer is settled into outputs and, for errors, a raised
exception (a failing cell fails "Run All").
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from IPython.core.error import UsageError

from ..errors import CellTimeout, InstancePreemptedError, SkywardError
from ..session import CellRun, Session
from . import envsync, options
from .commands import warn
from .kernel import KERNEL
from .output import CellOutput
from .remote_errors import combine
from .remote_errors import interrupted as interrupted_error
from .settle import Outcome, remote_source, settle
from .variables import LARGE_PUSH, describe_size, pickle_push, select_push
from .waker import WAKER

__all__ = ["run_cell"]


async def run_cell(session: Session, args: Any, code: str, line: str) -> None:
    """Run ``code`` (the cell under ``line``) as ``%%skyward run`` with ``args``; with
    ``--retry-on-preemption``, once more on the replacements of the nodes lost meanwhile."""
    __tracebackhide__ = True
    if args.timeout is not None and args.timeout <= 0:
        raise UsageError("--timeout must be a positive number of seconds")
    pull = options.parse_names("--pull", args.pull)
    targets = options.parse_targets(args.on)
    prefixed = session.size() > 1
    cell, outcome, interrupted = await _run_once(session, args, code, line, targets, pull)
    preempted = [a for a in cell.results.values() if isinstance(a, InstancePreemptedError)]
    if preempted and args.retry_on_preemption and not interrupted:
        for error in preempted:
            warn(
                f"skyward: node {error.node} was lost ({error.reason}); running the cell again "
                "on its replacement"
            )
        again = [e.node for e in preempted]
        cell, outcome, interrupted = await _run_once(session, args, code, line, again, pull)
        preempted = [a for a in cell.results.values() if isinstance(a, InstancePreemptedError)]
    if outcome.pulled:
        namespace = KERNEL.shell.user_ns if KERNEL.shell is not None else {}
        many = len(cell.nodes) > 1
        for name in pull:
            namespace[name] = (
                {n: v[name] for n, v in outcome.pulled.items()}
                if many
                else outcome.pulled[cell.nodes[0].node][name]
            )
    if interrupted:
        raise interrupted_error(outcome.interrupts, prefixed) from None
    if cell.timed_out:
        raise CellTimeout(args.timeout, outcome.stopped)
    if outcome.crashes:
        raise outcome.crashes[0]
    if outcome.errors:
        raise combine(envsync.annotate(outcome.errors), prefixed)
    if len(preempted) == 1 and len(outcome.lost) == 1:
        raise preempted[0]
    if outcome.lost:
        raise SkywardError("; ".join(outcome.lost))


async def _run_once(
    session: Session,
    args: Any,
    code: str,
    line: str,
    targets: list[int] | None,
    pull: list[str],
) -> tuple[CellRun, Outcome, bool]:
    """Choose the nodes, send what they lack, run the cell and settle its outputs:
    the cell, its outcome, and whether it was interrupted."""
    forced = options.parse_names("--push", args.push)
    budget = options.parse_size("--max-output", args.max_output)
    start = time.monotonic()
    nodes = await session.select(targets, wait=not args.no_wait, timeout=args.timeout, say=warn)
    timeout = args.timeout
    if timeout is not None:  # the wait for a replacement counts against --timeout
        timeout = max(0.001, timeout - (time.monotonic() - start))
    shell = KERNEL.shell
    namespace = shell.user_ns if shell is not None else {}
    push = await pickle_push(select_push(code, namespace, forced, automatic=not args.no_push))
    unsent = session.unsent(nodes, push)  # what the nodes do not hold yet (by content)
    size = sum(payload.size for payload in unsent.values())
    if size > LARGE_PUSH:
        sizes = ", ".join(f"{k}: {describe_size(v.size)}" for k, v in unsent.items())
        warn(
            f"skyward: sending {describe_size(size)} of variables to {len(nodes)} node(s) ({sizes})"
        )
    count = shell.execution_count if shell is not None else 0
    try:
        await session.before_cell(nodes)
    except Exception as exc:  # the cell still runs
        warn(f"skyward: could not send the kernel's local modules: {exc}")
    cell = session.prepare(nodes, count)
    prefixed = session.size() > 1
    tasks = {cell.task_ids[n.node]: n.node for n in nodes}
    view = CellOutput(session.events, tasks, prefixed=prefixed, grouped=args.group_outputs)
    interrupted = False
    KERNEL.task = asyncio.current_task()  # live panel: its Interrupt button cancels this
    try:
        await session.run(
            cell,
            remote_source(line, code),
            push=push or None,
            pull=pull or None,
            timeout=timeout,
            second_interrupt=WAKER.next_interrupt if WAKER.installed else None,
            count=count,
            max_output=budget,
        )
    except asyncio.CancelledError:
        interrupted = True
    finally:
        KERNEL.task = None
        outcome = settle(cell, view, interrupted, prefixed, budget)
        view.close()
    return cell, outcome, interrupted
