"""Keeping a ready cluster honest: heartbeats, limits, and nodes that go away.

One watch per ready cluster, a task on the kernel's loop:

- a heartbeat to every agent, so an instance whose kernel died can notice the silence and
  shut itself down (the agent's ``--grace``);
- ``--idle-timeout``, ``--ttl`` and ``--max-cost`` (a warning at 80 %), each ending in a
  ``ShutdownRequested`` with the reason said where the user looks;
- lost nodes: a provider status that says preempted or gone, or an agent channel that
  drops and cannot be reopened, becomes ``InstancePreempted``; the node is then replaced
  under the same node id (``InstanceRequested(replacing=…)`` → ``InstanceReplaced``)
  unless the cluster was started with ``--no-replace``. A channel that drops while the
  instance still runs is reopened, and the agent resends what was missed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .core.provider import InstanceState, StatusReport
from .core.registry import ClusterRecord, ClusterState
from .errors import InstancePreemptedError
from .events import Error, InstanceBootstrapped, InstancePreempted, InstanceRequested, NodeInstance
from .transport.agent_client import AgentClient
from .transport.ssh import connect

if TYPE_CHECKING:
    from .pool import Pool

__all__ = ["ClusterWatch"]

log = logging.getLogger("skyward")

STATUS_EVERY = 5.0  # seconds between provider status polls
RECONNECT_FOR = 60.0  # seconds spent reopening a dropped channel to a running instance
COST_WARNING = 0.8


class ClusterWatch:
    """The watch of one ready cluster (see the module docstring)."""

    def __init__(self, pool: Pool, record: ClusterRecord) -> None:
        self.pool = pool
        self.record = record
        self.last_activity = time.monotonic()
        self.notices: list[Callable[[str], None]] = []
        self._task: asyncio.Task[None] | None = None
        self._handling: set[str] = set()
        self._warned = False
        self._replacements: dict[int, asyncio.Future[NodeInstance | None]] = {}

    def start(self) -> None:
        for agent in self._agents():
            agent.on_lost = self.on_agent_lost
        self._task = self.pool.bus.spawn(self._loop(), name=f"skyward:watch-{self.record.id}")

    def stop(self) -> None:
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()

    def touch(self) -> None:
        """A cell started or ended: the cluster is not idle."""
        self.last_activity = time.monotonic()

    def _agents(self) -> list[AgentClient]:
        agents = self.pool.bootstrapper.agents
        return [agents[iid] for iid in self.record.instances if iid in agents]

    # -- the loop --------------------------------------------------------------------

    async def _loop(self) -> None:
        spec = self.record.spec
        beat = max(0.5, min(30.0, spec.grace / 3))
        tick = min(1.0, beat)
        next_beat = next_poll = time.monotonic()
        while self.record.state is ClusterState.READY:
            await asyncio.sleep(tick)
            now = time.monotonic()
            if now >= next_beat:
                next_beat = now + beat
                await self._heartbeat()
            reason = self._limit_reached()
            if reason:
                await self._shut_down(reason)
                return
            if now >= next_poll:
                next_poll = now + STATUS_EVERY
                await self._poll_status()

    async def _heartbeat(self) -> None:
        agents = [a for a in self._agents() if a.connected]
        await asyncio.gather(*(a.ping(timeout=10.0) for a in agents), return_exceptions=True)

    def cost(self) -> float:
        """Dollars spent so far: each instance's hourly price times its hours up."""
        now = time.time()
        total = 0.0
        for record in self.record.instances.values():
            ni = record.node_instance
            if ni is None or ni.instance.offer is None:
                continue
            offer = ni.instance.offer
            price = offer.price_per_hour
            if ni.instance.spot and offer.spot_price_per_hour is not None:
                price = offer.spot_price_per_hour
            total += price * (now - record.launched_at) / 3600.0
        return total

    def _limit_reached(self) -> str | None:
        spec = self.record.spec
        if spec.ttl is not None and time.time() - self.record.created_at >= spec.ttl:
            return f"its lifetime is over (--ttl {spec.ttl:g} s)"
        if spec.idle_timeout is not None and self.pool.running_cells == 0:
            idle = time.monotonic() - self.last_activity
            if idle >= spec.idle_timeout:
                return f"no cell ran for {idle:.0f} s (--idle-timeout {spec.idle_timeout:g} s)"
        if spec.max_cost is not None:
            cost = self.cost()
            if cost >= spec.max_cost:
                return f"its cost reached ${cost:.2f} (--max-cost ${spec.max_cost:.2f})"
            if cost >= COST_WARNING * spec.max_cost and not self._warned:
                self._warned = True
                self._tell(
                    f"cluster {self.record.id} has cost ${cost:.2f}, "
                    f"{cost / spec.max_cost:.0%} of --max-cost ${spec.max_cost:.2f}; it shuts "
                    "down when it reaches it",
                    fatal=False,
                )
        return None

    def _tell(self, message: str, fatal: bool) -> None:
        self.pool.bus.publish(Error(self.record.request_id, message, fatal))
        for notice in list(self.notices):
            try:
                notice(message)
            except Exception:
                log.exception("skyward: a notice failed")

    async def _shut_down(self, reason: str) -> None:
        self._tell(f"cluster {self.record.id} is shutting down: {reason}", fatal=False)
        await self.pool.shutdown(self.record.id)

    # -- lost nodes ----------------------------------------------------------------

    async def _poll_status(self) -> None:
        record = self.record
        for iid, inst in list(record.instances.items()):
            if not inst.ready or iid in self._handling or inst.node_instance is None:
                continue
            try:
                report = await record.provider.status(record.context, iid)
            except Exception as exc:
                log.debug("skyward: status of %s failed: %s", iid, exc)
                continue
            if report.state in (
                InstanceState.PREEMPTED,
                InstanceState.TERMINATED,
                InstanceState.STOPPED,
            ):
                reason = report.reason or f"the provider reports it {report.state.value}"
                await self.node_lost(inst.node_instance, reason)

    def on_agent_lost(self, agent: AgentClient, reason: str) -> None:
        """An agent channel dropped without our asking (called by the agent client)."""
        if self.record.state is ClusterState.READY:
            self.pool.bus.spawn(self._recover(agent, reason), name="skyward:recover")
        else:
            agent.fail(InstancePreemptedError(agent.node.node, reason))

    async def _recover(self, agent: AgentClient, reason: str) -> None:
        node = agent.node
        iid = node.instance.id
        if iid in self._handling:
            return
        found = self.pool.registry.instance(iid)
        host_key = found[1].host_public_key if found else ""
        deadline = time.monotonic() + RECONNECT_FOR
        delay = 0.2
        while time.monotonic() < deadline and self.record.state is ClusterState.READY:
            report = await self._status_of(iid)
            if report is not None and report.state is not InstanceState.RUNNING:
                reason = report.reason or f"the provider reports the instance {report.state.value}"
                break
            try:
                connection = await connect(node, host_key, timeout=10.0)
                await agent.reconnect(connection, timeout=10.0)
            except Exception as exc:
                log.info("skyward: reconnecting to node %s failed: %s", node.node, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            old = self.pool.bootstrapper.connections.get(iid)
            self.pool.bootstrapper.connections[iid] = connection
            if old is not None and old is not connection:
                old.close()
            log.info("skyward: node %s reconnected", node.node)
            return
        await self.node_lost(node, reason)

    async def _status_of(self, iid: str) -> StatusReport | None:
        try:
            return await self.record.provider.status(self.record.context, iid)
        except Exception:
            return None

    async def node_lost(self, node: NodeInstance, reason: str) -> None:
        """Say the node is lost, fail its running cell, and replace it (unless told not to)."""
        iid = node.instance.id
        if iid in self._handling or self.record.state is not ClusterState.READY:
            return
        self._handling.add(iid)
        inst = self.record.instances.get(iid)
        if inst is not None:
            inst.ready = False
        agent = self.pool.bootstrapper.agents.get(iid)
        if agent is not None:
            agent.fail(InstancePreemptedError(node.node, reason))
        self.pool.bus.publish(InstancePreempted(node, reason))
        waiter = self._replacements.setdefault(
            node.node, asyncio.get_running_loop().create_future()
        )
        if not self.record.spec.replace:
            await self.pool.lifecycle.destroy_instance(self.record, iid)
            waiter.set_result(None)
            return
        record = self.record
        request_id = f"{record.request_id}/replace-{node.node}-{iid[-6:]}"
        answer: Any = await self.pool.bus.request(
            lambda reply: InstanceRequested(
                request_id, record.provider.name, record.id, node.node, reply, replacing=iid
            )
        )
        new = answer.instance if isinstance(answer, InstanceBootstrapped) else None
        if new is not None:
            agent = self.pool.bootstrapper.agents.get(new.instance.id)
            if agent is not None:
                agent.on_lost = self.on_agent_lost
            self.pool.configure_nodes(record)
        if not waiter.done():
            waiter.set_result(new)
        self._replacements.pop(node.node, None)

    async def replacement(self, node: int, timeout: float) -> NodeInstance | None:
        """The node that replaces ``node`` once it is ready (None without replacement)."""
        waiter = self._replacements.get(node)
        if waiter is None:
            current = [n for n in self.record.node_instances() if n.node == node]
            return current[0] if current else None
        return await asyncio.wait_for(asyncio.shield(waiter), timeout)
