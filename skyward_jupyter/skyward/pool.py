"""The pool: one kernel's clusters, wired together from the layers below.

It builds the bus, the lifecycles, the providers and the bootstrapper, and offers the
few verbs the magics need: ``up``, ``run``, ``down``. It is the only place that knows
every layer, so that each layer below stays ignorant of the others.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import threading
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from .core.bus import EventBus
from .core.lifecycle import Lifecycle
from .core.provider import Provider
from .core.registry import ClusterRecord, ClusterState, Registry
from .errors import BootstrapError, ProvisionError, UsageError
from .events import (
    BootstrapFailed,
    ClusterReady,
    ClusterRequested,
    Error,
    NodeInstance,
    ShutdownRequested,
)
from .model import ClusterSpec
from .transport.bootstrap import Bootstrapper
from .transport.keys import generate_host_key, make_cluster_keys

__all__ = ["CellRun", "Pool"]

log = logging.getLogger("skyward")


def default_provider_for(name: str, spec: ClusterSpec) -> Provider:
    """Build the provider ``name`` with the options of ``spec``."""
    from .providers import get_provider

    if name == "container":
        return get_provider(name, runtime=spec.runtime)
    return get_provider(name)


INTERRUPT_GRACE = 10.0  # seconds a remote cell gets to stop after an interrupt
TIMEOUT_GRACE = 5.0  # ... after its --timeout
MASTER_PORT = 29500


class CellRun:
    """One cell sent to some nodes: its task ids and, once done, each node's answer."""

    def __init__(self, task_prefix: str, nodes: list[NodeInstance]) -> None:
        self.nodes = nodes
        self.task_ids = {n.node: f"{task_prefix}-n{n.node}" for n in nodes}
        self.results: dict[int, dict[str, Any] | BaseException] = {}
        self.timed_out = False
        self.killed: list[int] = []  # nodes whose agent was killed and restarted


class Pool:
    """This kernel's clusters (one current at a time) and the verbs on them."""

    def __init__(self, provider_for: Callable[[str, ClusterSpec], Provider] | None = None):
        self.bus = EventBus()
        self.registry = Registry()
        self.lifecycle = Lifecycle(
            self.bus,
            self.registry,
            provider_for or default_provider_for,
            make_cluster_keys,
            generate_host_key,
        )
        self.bootstrapper = Bootstrapper(self.bus, self.registry)
        self.current: ClusterRecord | None = None
        self._cells = itertools.count(1)
        self._node_env: dict[str, tuple[dict[str, str], dict[str, Any]]] = {}

    # -- up -----------------------------------------------------------------------------

    async def up(self, spec: ClusterSpec) -> ClusterReady:
        """Provision and bootstrap a cluster; raise with the reason if it fails.

        If this coroutine is cancelled (an interrupted cell), everything launched so far
        is destroyed before the cancellation goes on.
        """
        if self.current is not None and self.current.state is not ClusterState.DESTROYED:
            raise UsageError(f"cluster {self.current.id} is already up; `%skyward down` it first")
        request_id = "up-" + secrets.token_hex(4)
        failures: list[BootstrapFailed] = []
        unsubscribe = self.bus.subscribe(BootstrapFailed, failures.append)
        try:
            answer = await self.bus.request(
                lambda reply: ClusterRequested(request_id, spec.provider, spec, reply)  # type: ignore[arg-type]
            )
        except asyncio.CancelledError:
            await asyncio.shield(self._abort(request_id))
            raise
        finally:
            unsubscribe()
        record = self.registry.by_request(request_id)
        if isinstance(answer, ClusterReady):
            self.current = record
            self._configure(answer)
            return answer
        if failures:
            first = failures[0]
            message, _, output = first.error.partition("\n")
            raise BootstrapError(first.instance.node, first.phase, message, output)
        raise ProvisionError(answer.message if isinstance(answer, Error) else str(answer))

    def _configure(self, ready: ClusterReady) -> None:
        """Tell each node who it is in the cluster: the variables torch.distributed and
        jax.distributed read, and what ``skyward.node()`` answers."""
        nodes = ready.cluster.nodes
        addresses = [n.instance.private_ip or n.instance.ip for n in nodes]
        for n in nodes:
            self._node_env[n.instance.id] = (
                {
                    "MASTER_ADDR": addresses[0],
                    "MASTER_PORT": str(MASTER_PORT),
                    "WORLD_SIZE": str(len(nodes)),
                    "RANK": str(n.node),
                    "NODE_RANK": str(n.node),
                    "LOCAL_RANK": "0",
                    "LOCAL_WORLD_SIZE": "1",
                    "JAX_COORDINATOR_ADDRESS": f"{addresses[0]}:{MASTER_PORT + 1}",
                    "JAX_NUM_PROCESSES": str(len(nodes)),
                    "JAX_PROCESS_ID": str(n.node),
                },
                {
                    "id": n.node,
                    "count": len(nodes),
                    "addresses": addresses,
                    "cluster": ready.cluster.id,
                },
            )
            agent = self.bootstrapper.agents.get(n.instance.id)
            if agent is not None:
                agent.configure(*self._node_env[n.instance.id])

    async def _abort(self, request_id: str) -> None:
        for _ in range(100):
            record = self.registry.by_request(request_id)
            if record is not None:
                break
            await asyncio.sleep(0.01)
        else:
            return
        await self._shutdown(record.id)

    # -- run ----------------------------------------------------------------------------

    def ready_cluster(self) -> ClusterRecord:
        """The current cluster, if it is ready for cells."""
        record = self.current
        if record is None or record.state is not ClusterState.READY:
            raise UsageError("no cluster is up: run `%skyward up --provider container` first")
        return record

    def select(self, targets: Iterable[int] | None) -> list[NodeInstance]:
        """The ready nodes a cell should run on (all when ``targets`` is None)."""
        nodes = self.ready_cluster().node_instances()
        if targets is None:
            return nodes
        wanted = sorted(set(targets))
        known = {n.node: n for n in nodes}
        missing = [t for t in wanted if t not in known]
        if missing:
            raise UsageError(
                f"no node {', '.join(map(str, missing))} in this cluster "
                f"(nodes are {', '.join(map(str, known))})"
            )
        return [known[t] for t in wanted]

    def prepare(self, nodes: list[NodeInstance]) -> CellRun:
        """A new cell run over ``nodes`` (no I/O yet)."""
        record = self.ready_cluster()
        return CellRun(f"{record.id}-cell{next(self._cells)}", nodes)

    async def run(
        self,
        cell: CellRun,
        code: str,
        filename: str,
        push: dict[str, bytes] | None = None,
        pull: list[str] | None = None,
        timeout: float | None = None,
        second_interrupt: Callable[[], Awaitable[None]] | None = None,
    ) -> CellRun:
        """Run ``code`` on the cell's nodes concurrently; collect each node's answer.

        On cancellation (a kernel interrupt) or after ``timeout`` seconds, the remote cells
        are interrupted and their answers awaited briefly, so their output and errors
        still arrive. A node whose cell does not stop in time, or when
        ``second_interrupt`` returns first (the user interrupted again), has its agent
        killed and restarted: its cell ends and its variables are lost.
        """
        agents = self.bootstrapper.agents
        futures: dict[int, asyncio.Future[dict[str, Any]]] = {}
        for node in cell.nodes:
            agent = agents[node.instance.id]
            task_id = cell.task_ids[node.node]
            futures[node.node] = asyncio.ensure_future(
                agent.execute(task_id, code, filename, push=push, pull=pull)
            )
        try:
            _, pending = await asyncio.wait(futures.values(), timeout=timeout)
            if pending:
                cell.timed_out = True
                await self._stop(cell, futures, TIMEOUT_GRACE, None)
        except asyncio.CancelledError:
            await asyncio.shield(self._stop(cell, futures, INTERRUPT_GRACE, second_interrupt))
            self._collect(cell, futures)
            raise
        self._collect(cell, futures)
        return cell

    async def _stop(
        self,
        cell: CellRun,
        futures: dict[int, asyncio.Future[dict[str, Any]]],
        grace: float,
        second_interrupt: Callable[[], Awaitable[None]] | None,
    ) -> None:
        agents = self.bootstrapper.agents
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
        await asyncio.gather(*(self._restart(cell, n) for n in stuck), return_exceptions=True)

    async def _restart(self, cell: CellRun, node: NodeInstance) -> None:
        fresh = await self.bootstrapper.restart_agent(node.instance.id)
        cell.killed.append(node.node)
        env = self._node_env.get(node.instance.id)
        if env is not None:
            fresh.configure(*env)

    @staticmethod
    def _collect(cell: CellRun, futures: dict[int, asyncio.Future[dict[str, Any]]]) -> None:
        for node, future in futures.items():
            if future.done():
                exc = future.exception()
                cell.results[node] = exc if exc is not None else future.result()
            else:
                future.cancel()

    # -- down ---------------------------------------------------------------------------

    async def down(self) -> ClusterRecord:
        """Destroy the current cluster and everything it launched."""
        record = self.current
        if record is None or record.state is ClusterState.DESTROYED:
            raise UsageError("no cluster is up")
        await self._shutdown(record.id)
        return record

    async def _shutdown(self, cluster_id: str) -> None:
        await asyncio.shield(self.bus.request(lambda reply: ShutdownRequested(cluster_id, reply)))

    async def aclose(self) -> None:
        """Destroy every live cluster, then stop the bus."""
        for record in self.registry.live():
            await self._shutdown(record.id)
        await self.bus.aclose()

    def close_sync(self, timeout: float = 60.0) -> None:
        """Destroy every live instance without the kernel's loop (at interpreter exit).

        The providers' ``destroy`` runs on a fresh loop in a helper thread, so this works
        whether or not the kernel's loop is still running.
        """
        live = [(record, iid) for record in self.registry.live() for iid in list(record.instances)]
        if not live:
            return

        async def destroy_all() -> None:
            async def one(record: ClusterRecord, iid: str) -> None:
                try:
                    await record.provider.destroy(record.context, iid)
                    record.instances.pop(iid, None)
                except Exception:
                    log.exception("skyward: could not destroy %s at exit", iid)

            await asyncio.gather(*(one(r, i) for r, i in live))
            for record in {id(r): r for r, _ in live}.values():
                try:
                    await record.provider.teardown(record.context)
                except Exception:
                    log.exception("skyward: could not tear down %s at exit", record.id)
                record.state = ClusterState.DESTROYED

        thread = threading.Thread(target=asyncio.run, args=(destroy_all(),), daemon=True)
        thread.start()
        thread.join(timeout)
