"""Keeping ready clusters honest: heartbeats, limits, and nodes that go away.

A :class:`Watcher` starts one watch per cluster that becomes ready (``ClusterReady``),
a task on the kernel's loop:

- a heartbeat to every agent, so an instance whose kernel died can notice the silence and
  shut itself down (the agent's ``--grace``);
- ``--idle-timeout``, ``--ttl`` and ``--max-cost`` (a warning at 80 %), each ending in a
  ``ShutdownRequested`` with the reason said as a non-fatal ``Error``;
- lost nodes: a provider status that says preempted or gone, or an agent channel that
  drops and cannot be reopened, becomes ``InstancePreempted``; the node is ``replacing``
  while it is replaced under the same node id (``InstanceRequested(replacing=…)`` →
  ``InstanceReplaced``), or ``lost`` with ``--no-replace``. A channel that drops while
  the instance still runs is reopened, and the agent resends what was missed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from ..errors import InstancePreemptedError
from ..events import (
    ClusterDestroyed,
    ClusterReady,
    Error,
    InstanceBootstrapped,
    InstancePreempted,
    InstanceRequested,
    NodeInstance,
    ShutdownRequested,
    TaskCompleted,
    TaskStarted,
)
from .bus import EventBus
from .channels import NodeChannels
from .lifecycle import Lifecycle
from .provider import InstanceState
from .registry import ClusterRecord, ClusterState, NodeState, Registry

__all__ = ["ClusterWatch", "Watcher"]

log = logging.getLogger("skyward")

STATUS_EVERY = 5.0  # seconds between provider status polls
RECONNECT_FOR = 60.0  # seconds spent reopening a dropped channel to a running instance
COST_WARNING = 0.8
GONE = (InstanceState.PREEMPTED, InstanceState.TERMINATED, InstanceState.STOPPED)


class Watcher:
    """The watches of this kernel's ready clusters, started and stopped by the bus."""

    def __init__(
        self, bus: EventBus, registry: Registry, lifecycle: Lifecycle, channels: NodeChannels
    ) -> None:
        self.bus = bus
        self.registry = registry
        self.lifecycle = lifecycle
        self.channels = channels
        self.watches: dict[str, ClusterWatch] = {}
        channels.on_lost = self._on_lost
        bus.subscribe(ClusterReady, self._on_ready)
        bus.subscribe(ClusterDestroyed, self._on_destroyed)
        bus.subscribe((TaskStarted, TaskCompleted), self._on_task)

    def _on_ready(self, event: ClusterReady) -> None:
        record = self.registry.clusters.get(event.cluster.id)
        if record is None or record.id in self.watches:
            return
        watch = self.watches[record.id] = ClusterWatch(self, record)
        watch.start()

    def _on_destroyed(self, event: ClusterDestroyed) -> None:
        watch = self.watches.pop(event.cluster_id, None)
        if watch is not None:
            watch.stop()

    def _on_task(self, event: TaskStarted | TaskCompleted) -> None:
        found = self.registry.instance(event.instance.instance.id)
        watch = self.watches.get(found[0].id) if found else None
        if watch is not None:
            watch.task(event)

    def _on_lost(self, node: NodeInstance, reason: str) -> None:
        found = self.registry.instance(node.instance.id)
        watch = self.watches.get(found[0].id) if found else None
        if watch is not None and watch.record.state is ClusterState.READY:
            self.bus.spawn(watch.recover(node, reason), name="skyward:recover")
        else:
            self.channels.fail(node.instance.id, InstancePreemptedError(node.node, reason))

    async def replacement(self, cluster_id: str, node: int, timeout: float) -> NodeInstance | None:
        """The instance that fills ``node`` once it is ready again (None if it is lost)."""
        watch = self.watches.get(cluster_id)
        if watch is None:
            return None
        return await watch.replacement(node, timeout)


class ClusterWatch:
    """The watch of one ready cluster (see the module docstring)."""

    def __init__(self, watcher: Watcher, record: ClusterRecord) -> None:
        self.watcher = watcher
        self.bus = watcher.bus
        self.channels = watcher.channels
        self.record = record
        self.last_activity = time.monotonic()
        self.running: dict[str, str] = {}  # task id -> instance id, of the cells running now
        self._task: asyncio.Task[None] | None = None
        self._handling: set[str] = set()
        self._warned = False
        self._replacements: dict[int, asyncio.Future[NodeInstance | None]] = {}

    def start(self) -> None:
        self._task = self.bus.spawn(self._loop(), name=f"skyward:watch-{self.record.id}")

    def stop(self) -> None:
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()
        for waiter in self._replacements.values():
            if not waiter.done():
                waiter.set_result(None)

    def task(self, event: TaskStarted | TaskCompleted) -> None:
        """A cell started or ended on a node: the cluster is not idle."""
        self.last_activity = time.monotonic()
        if isinstance(event, TaskStarted):
            self.running[event.task_id] = event.instance.instance.id
        else:
            self.running.pop(event.task_id, None)

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
                await self.channels.ping(list(self.record.instances))
            reason = self._limit_reached()
            if reason:
                await self._shut_down(reason)
                return
            if now >= next_poll:
                next_poll = now + STATUS_EVERY
                await self._poll_status()

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
        if spec.idle_timeout is not None and not self.running:
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
                    "down when it reaches it"
                )
        return None

    def _tell(self, message: str) -> None:
        self.bus.publish(Error(self.record.request_id, message, fatal=False))

    async def _shut_down(self, reason: str) -> None:
        self._tell(f"cluster {self.record.id} is shutting down: {reason}")
        cluster_id = self.record.id
        await asyncio.shield(self.bus.request(lambda reply: ShutdownRequested(cluster_id, reply)))

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
            if report.state in GONE:
                reason = report.reason or f"the provider reports it {report.state.value}"
                await self.node_lost(inst.node_instance, reason)

    async def recover(self, node: NodeInstance, reason: str) -> None:
        """A node's channel dropped: reopen it while the instance runs, else it is lost."""
        iid = node.instance.id
        if iid in self._handling:
            return
        inst = self.record.instances.get(iid)
        host_key = inst.host_public_key if inst is not None else ""
        deadline = time.monotonic() + RECONNECT_FOR
        delay = 0.2
        while time.monotonic() < deadline and self.record.state is ClusterState.READY:
            try:
                report = await self.record.provider.status(self.record.context, iid)
            except Exception:
                report = None
            if report is not None and report.state is not InstanceState.RUNNING:
                reason = report.reason or f"the provider reports the instance {report.state.value}"
                break
            try:
                await self.channels.reconnect(node, host_key)
            except Exception as exc:
                log.info("skyward: reconnecting to node %s failed: %s", node.node, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            log.info("skyward: node %s reconnected", node.node)
            return
        await self.node_lost(node, reason)

    async def node_lost(self, node: NodeInstance, reason: str) -> None:
        """Say the node is lost, fail its running cell, and replace it (unless told not to)."""
        iid = node.instance.id
        record = self.record
        if iid in self._handling or record.state is not ClusterState.READY:
            return
        self._handling.add(iid)
        inst = record.instances.get(iid)
        if inst is not None:
            inst.ready = False
        slot = record.slot(node.node)
        slot.reason = reason
        slot.move(NodeState.REPLACING if record.spec.replace else NodeState.LOST)
        self._replacements.setdefault(node.node, asyncio.get_running_loop().create_future())
        self.running = {t: i for t, i in self.running.items() if i != iid}
        self.channels.fail(iid, InstancePreemptedError(node.node, reason))
        self.bus.publish(InstancePreempted(node, reason))
        if not record.spec.replace:
            await self.watcher.lifecycle.destroy_instance(record, iid)
            self._resolve(node.node, None)
            return
        request_id = f"{record.request_id}/replace-{node.node}-{iid[-6:]}"
        answer: Any = await self.bus.request(
            lambda reply: InstanceRequested(
                request_id, record.provider.name, record.id, node.node, reply, replacing=iid
            )
        )
        if isinstance(answer, Error):
            slot.reason = f"{reason}; its replacement failed: {answer.message}"
        self._resolve(
            node.node, answer.instance if isinstance(answer, InstanceBootstrapped) else None
        )

    def _resolve(self, node: int, new: NodeInstance | None) -> None:
        waiter = self._replacements.pop(node, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(new)

    async def replacement(self, node: int, timeout: float) -> NodeInstance | None:
        """The node that replaces ``node`` once it is ready (None without replacement)."""
        waiter = self._replacements.get(node)
        if waiter is None:
            current = [n for n in self.record.node_instances() if n.node == node]
            return current[0] if current else None
        return await asyncio.wait_for(asyncio.shield(waiter), timeout)
