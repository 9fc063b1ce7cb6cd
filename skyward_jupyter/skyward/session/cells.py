"""Sending one cell to some nodes and collecting each node's answer.

Every node's cell starts at once; on cancellation (a kernel interrupt) or after the
cell's ``--timeout``, the remote cells are interrupted and their answers awaited briefly,
so their output and errors still arrive. A node whose cell does not stop in time has its
worker killed: its cell ends as a crash and its variables are lost.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from ..errors import InstancePreemptedError
from ..events import NodeInstance
from ..payload import Payload
from ..protocol import Run
from ..transport import fanout
from ..transport.agent_client import Answer
from ..transport.agents import Agents
from ..transport.upload import Uploader, direct_allowed

__all__ = ["CellRun", "Cells"]

INTERRUPT_GRACE = 10.0  # seconds a remote cell gets to stop after an interrupt
TIMEOUT_GRACE = 5.0  # ... after its --timeout
KILL_GRACE = 10.0  # seconds to hear that a killed worker is gone

SecondInterrupt = Callable[[], Awaitable[None]]


class CellRun:
    """One cell sent to some nodes: its task ids and, once done, each node's answer."""

    def __init__(self, task_prefix: str, nodes: list[NodeInstance], name: str = "cell") -> None:
        self.nodes = nodes
        self.task_ids = {n.node: f"{task_prefix}-n{n.node}" for n in nodes}
        self.results: dict[int, Answer | BaseException] = {}
        self.timed_out = False
        self.name = name
        self.killed: list[int] = []  # nodes whose worker was killed (the cell did not stop)


class Cells:
    """Runs cells through the nodes' agents."""

    def __init__(self, agents: Agents) -> None:
        self.agents = agents.clients
        self._relay_tokens: dict[str, str] = {}
        self._uploaders: dict[str, Uploader] = {}

    def unsent(self, nodes: list[NodeInstance], push: dict[str, Payload]) -> dict[str, Payload]:
        """The variables of ``push`` that some of ``nodes`` do not hold yet."""
        agents = [self.agents.get(n.instance.id) for n in nodes]
        return {
            name: payload
            for name, payload in push.items()
            if payload.inline or any(a is None or payload.key not in a.blobs for a in agents)
        }

    def relay(self, cluster_id: str, nodes: list[NodeInstance]) -> fanout.Relay | None:
        """The cluster's head node as a relay of blobs: for the other nodes, and for this
        kernel when the head is on this machine (``upload.direct_allowed``); None for
        one node elsewhere."""
        for gone in [i for i in self._uploaders if i not in self.agents]:
            self._uploaders.pop(gone).close()
        head = self.agents.get(nodes[0].instance.id) if nodes else None
        if head is None or not head.connected:
            return None
        instance = nodes[0].instance
        host = instance.private_ip or instance.ip
        uploader = None
        if direct_allowed(host):
            uploader = self._uploaders.setdefault(instance.id, Uploader(nodes[0].node))
        if len(nodes) < 2 and (uploader is None or uploader.failed):
            return None
        token = self._relay_tokens.setdefault(cluster_id, secrets.token_hex(16))
        return fanout.Relay(head, host, token, uploader)

    async def run(
        self,
        cell: CellRun,
        run: Run,
        payloads: list[Payload],
        relay: fanout.Relay | None,
        timeout: float | None,
        second_interrupt: SecondInterrupt | None,
    ) -> CellRun:
        """Run ``run`` on the cell's nodes concurrently; collect each node's answer."""
        agents = self.agents
        if any(not p.inline for p in payloads):
            targets = [agents[n.instance.id] for n in cell.nodes if n.instance.id in agents]
            connected = [a for a in targets if a.connected]
            await fanout.deliver(connected, payloads, relay)
        futures: dict[int, asyncio.Future[Answer]] = {}
        for node in cell.nodes:
            agent = agents.get(node.instance.id)
            if agent is None or not agent.connected:
                missing: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
                missing.set_exception(
                    InstancePreemptedError(node.node, "its agent is not connected")
                )
                futures[node.node] = missing
                continue
            task = replace(run, task=cell.task_ids[node.node])
            futures[node.node] = asyncio.ensure_future(
                fanout.execute(agent, task, payloads, cell.name)
            )
        try:
            _, pending = await asyncio.wait(futures.values(), timeout=timeout)
            if pending:
                cell.timed_out = True
                await self._stop(cell, futures, TIMEOUT_GRACE, None)
        except asyncio.CancelledError:
            await asyncio.shield(self._stop(cell, futures, INTERRUPT_GRACE, second_interrupt))
            _collect(cell, futures)
            raise
        _collect(cell, futures)
        return cell

    async def _stop(
        self,
        cell: CellRun,
        futures: dict[int, asyncio.Future[Answer]],
        grace: float,
        second_interrupt: SecondInterrupt | None,
    ) -> None:
        agents = self.agents
        running = [n for n in cell.nodes if not futures[n.node].done()]
        for node in running:
            try:
                agents[node.instance.id].interrupt(cell.task_ids[node.node])
            except Exception:
                pass
        pending: set[asyncio.Future[Any]] = {futures[n.node] for n in running}
        again = asyncio.ensure_future(second_interrupt()) if second_interrupt else None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        try:
            while pending and loop.time() < deadline:
                watch = pending | ({again} if again else set())
                done, _ = await asyncio.wait(
                    watch, timeout=deadline - loop.time(), return_when=asyncio.FIRST_COMPLETED
                )
                pending -= done
                if again is not None and again in done:
                    break
        finally:
            if again is not None:
                again.cancel()
        stuck = [n for n in running if not futures[n.node].done()]
        for node in stuck:
            try:
                agents[node.instance.id].kill(cell.task_ids[node.node])
                cell.killed.append(node.node)
            except Exception:
                pass
        if stuck:
            await asyncio.wait([futures[n.node] for n in stuck], timeout=KILL_GRACE)


def _collect(cell: CellRun, futures: dict[int, asyncio.Future[Answer]]) -> None:
    for node, future in futures.items():
        if future.done():
            exc = future.exception()
            cell.results[node] = exc if exc is not None else future.result()
        else:
            future.cancel()
