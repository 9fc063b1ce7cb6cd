"""Which nodes a cell runs on: every node it is for, or none.

A node being replaced is waited for (one line says so) within the cell's ``--timeout``,
or fails the cell at once with ``--no-wait``; a node that is lost, or that the cluster
does not have, fails it: a cell never runs on fewer nodes than it is for.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

from ..core.registry import ClusterRecord, NodeState
from ..core.watch import Watcher
from ..errors import NodeUnavailable
from ..events import NodeInstance

__all__ = ["select_nodes"]


async def select_nodes(
    record: ClusterRecord,
    watcher: Watcher,
    targets: Iterable[int] | None,
    wait: bool = True,
    timeout: float | None = None,
    say: Callable[[str], None] = print,
) -> list[NodeInstance]:
    """The nodes a cell should run on (every node of the cluster when ``targets`` is
    None). A node being replaced is waited for (``say`` tells the user so) up to
    ``timeout`` seconds, or fails at once when not ``wait``; a node that is lost or
    not in the cluster fails. Never fewer nodes than asked for."""
    known = sorted(record.nodes)
    wanted = known if targets is None else sorted(set(targets))
    unknown = [t for t in wanted if t not in record.nodes]
    if unknown:
        raise NodeUnavailable(
            f"no node {_ids(unknown)} in this cluster (nodes are {_ids(known)}); "
            "the cell did not run",
            unknown,
        )
    await _await_replacements(record, watcher, wanted, wait, timeout, say)
    ready = {n.node: n for n in record.node_instances()}
    missing = [t for t in wanted if t not in ready]
    if missing:
        reasons = "; ".join(
            f"node {t} is {record.nodes[t].state.value}"
            + (f" ({record.nodes[t].reason})" if record.nodes[t].reason else "")
            for t in missing
        )
        others = [t for t in known if t in ready]
        hint = f"; `--on {','.join(map(str, others))}` runs it on the others" if others else ""
        raise NodeUnavailable(f"{reasons}: the cell did not run{hint}", missing)
    return [ready[t] for t in wanted]


async def _await_replacements(
    record: ClusterRecord,
    watcher: Watcher,
    wanted: list[int],
    wait: bool,
    timeout: float | None,
    say: Callable[[str], None],
) -> None:
    replacing = [t for t in wanted if record.nodes[t].state is NodeState.REPLACING]
    if not replacing:
        return
    which = f"node {_ids(replacing)}"
    why = record.nodes[replacing[0]].reason
    if not wait:
        raise NodeUnavailable(
            f"{which} is being replaced ({why}); the cell did not run (--no-wait)",
            replacing,
        )
    limit = timeout or record.spec.launch_timeout + record.spec.bootstrap_timeout
    say(
        f"skyward: {which} is being replaced ({why}); the cell waits for it "
        f"(at most {limit:g} s; --no-wait fails at once instead)"
    )
    try:
        async with asyncio.timeout(limit):
            await asyncio.gather(*(watcher.replacement(record.id, t, limit) for t in replacing))
    except TimeoutError:
        raise NodeUnavailable(
            f"{which} is still being replaced after {limit:g} s; the cell did not run",
            replacing,
        ) from None


def _ids(nodes: list[int]) -> str:
    return ", ".join(map(str, nodes))
