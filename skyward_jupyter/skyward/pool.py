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
import typing
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

from .core.bus import EventBus
from .core.ledger import KernelIdentity, Ledger, LedgerEntry, cluster_key, spec_from_dict
from .core.lifecycle import Lifecycle, resource_note
from .core.plain_threads import PlainThreadExecutor
from .core.provider import ClusterKeys, Provider
from .core.registry import ClusterRecord, ClusterState, InstanceRecord, Registry
from .errors import BootstrapError, InstancePreemptedError, ProvisionError, UsageError
from .events import (
    BootstrapFailed,
    ClusterReady,
    ClusterRequested,
    ConsoleOutput,
    Error,
    Event,
    InstanceBootstrapped,
    InstanceProvisioned,
    Log,
    Metric,
    NodeInstance,
    ShutdownRequested,
)
from .model import Cluster, ClusterSpec, Instance, Offer
from .payload import Payload
from .protocol import Run
from .transport import fanout
from .transport.agent_client import Answer
from .transport.bootstrap import Bootstrapper
from .transport.keys import data_dir, forget_cluster_keys, generate_host_key, make_cluster_keys
from .watch import ClusterWatch

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
KILL_GRACE = 10.0  # seconds to hear that a killed worker is gone
MASTER_PORT = 29500
HISTORY = 5000
LIFECYCLE = tuple(
    kind
    for kind in typing.get_args(Event)
    if kind not in (Log, Metric, ConsoleOutput)  # the lines and samples: too many to keep
)


class CellRun:
    """One cell sent to some nodes: its task ids and, once done, each node's answer."""

    def __init__(self, task_prefix: str, nodes: list[NodeInstance]) -> None:
        self.nodes = nodes
        self.task_ids = {n.node: f"{task_prefix}-n{n.node}" for n in nodes}
        self.results: dict[int, Answer | BaseException] = {}
        self.timed_out = False
        self.name = "cell"
        self.killed: list[int] = []  # nodes whose worker was killed (the cell did not stop)


class Pool:
    """This kernel's clusters (one current at a time) and the verbs on them."""

    def __init__(self, provider_for: Callable[[str, ClusterSpec], Provider] | None = None):
        self.bus = EventBus()
        self.registry = Registry()
        self.provider_for = provider_for or default_provider_for
        self.ledger = Ledger(data_dir() / "ledger.json")
        self.lifecycle = Lifecycle(
            self.bus,
            self.registry,
            self.provider_for,
            make_cluster_keys,
            generate_host_key,
            ledger=self.ledger,
            forget_keys=forget_cluster_keys,
        )
        self.bootstrapper = Bootstrapper(self.bus, self.registry)
        self.bootstrapper.on_host_key = self._host_key_rotated
        self.current: ClusterRecord | None = None
        self._cells = itertools.count(1)
        self.watches: dict[str, ClusterWatch] = {}
        self.history: deque[Any] = deque(maxlen=HISTORY)
        """The latest lifecycle facts (not log lines or metrics), for status and debugging."""
        self.bus.subscribe(LIFECYCLE, self.history.append)
        self.running_cells = 0
        self._secrets: dict[str, dict[str, str]] = {}  # --env values, by cluster
        self.colors = ""
        """The kernel's IPython traceback colours, for the nodes' tracebacks."""
        self._relay_tokens: dict[str, str] = {}

    # -- up -----------------------------------------------------------------------------

    async def up(self, spec: ClusterSpec, env: dict[str, str] | None = None) -> ClusterReady:
        """Provision and bootstrap a cluster; raise with the reason if it fails.

        ``env`` holds the values of ``spec.env``: secrets, kept here (never in the spec)
        and sent to each node once, over the agent channel.

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
        if isinstance(answer, ClusterReady) and record is not None:
            self._secrets[record.id] = dict(env or {})
            self.current = record
            self.configure_nodes(record)
            watch = self.watches[record.id] = ClusterWatch(self, record)
            watch.start()
            return answer
        if failures:
            first = failures[0]
            message, _, output = first.error.partition("\n")
            raise BootstrapError(first.instance.node, first.phase, message, output)
        raise ProvisionError(answer.message if isinstance(answer, Error) else str(answer))

    def configure_nodes(self, record: ClusterRecord) -> None:
        """Tell each node who it is in the cluster: the variables torch.distributed and
        jax.distributed read, and what ``skyward.node()`` answers (again after a node is
        replaced, since the head's address may change)."""
        nodes = record.node_instances()
        addresses = [n.instance.private_ip or n.instance.ip for n in nodes]
        secrets = self._secrets.get(record.id, {})
        for n in nodes:
            env = {
                **secrets,
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
            }
            info = {"id": n.node, "count": len(nodes), "addresses": addresses, "cluster": record.id}
            agent = self.bootstrapper.agents.get(n.instance.id)
            if agent is not None and agent.connected:
                agent.configure(env, info, self.colors)

    def _host_key_rotated(self, record: InstanceRecord, public_key: str) -> None:
        if record.ledger_key:
            self.ledger.update(record.ledger_key, host_public_key=public_key)

    async def _abort(self, request_id: str) -> None:
        for _ in range(100):
            record = self.registry.by_request(request_id)
            if record is not None:
                break
            await asyncio.sleep(0.01)
        else:
            return
        await self.shutdown(record.id)

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

    def prepare(self, nodes: list[NodeInstance], count: int = 0) -> CellRun:
        """A new cell run over ``nodes`` (no I/O yet); ``count`` is the kernel's
        execution count of the cell (its name in the panel: ``cell N``)."""
        record = self.ready_cluster()
        number = next(self._cells)
        cell = CellRun(f"{record.id}-cell{number}", nodes)
        cell.name = f"cell {count or number}"
        return cell

    async def run(
        self,
        cell: CellRun,
        code: str,
        push: dict[str, Payload] | None = None,
        pull: list[str] | None = None,
        timeout: float | None = None,
        second_interrupt: Callable[[], Awaitable[None]] | None = None,
        count: int = 0,
        max_output: int = 10_000_000,
    ) -> CellRun:
        """Run ``code`` on the cell's nodes concurrently; collect each node's answer.

        On cancellation (a kernel interrupt) or after ``timeout`` seconds, the remote cells
        are interrupted and their answers awaited briefly, so their output and errors
        still arrive. A node whose cell does not stop in time, or when
        ``second_interrupt`` returns first (the user interrupted again), has its worker
        killed: its cell ends as a crash and its variables are lost.
        """
        watch = self.watches.get(self.current.id) if self.current else None
        self.running_cells += 1
        if watch is not None:
            watch.touch()
        try:
            payloads = list((push or {}).values())
            run = Run("", code, count, fanout.run_push(push or {}), tuple(pull or ()), max_output)
            return await self._run(cell, run, payloads, timeout, second_interrupt)
        finally:
            self.running_cells -= 1
            if watch is not None:
                watch.touch()

    async def _run(
        self,
        cell: CellRun,
        run: Run,
        payloads: list[Payload],
        timeout: float | None,
        second_interrupt: Callable[[], Awaitable[None]] | None,
    ) -> CellRun:
        agents = self.bootstrapper.agents
        if any(not p.inline for p in payloads):
            targets = [agents[n.instance.id] for n in cell.nodes if n.instance.id in agents]
            connected = [a for a in targets if a.connected]
            await fanout.deliver(connected, payloads, self._relay())
        futures: dict[int, asyncio.Future[Answer]] = {}
        for node in cell.nodes:
            agent = agents.get(node.instance.id)
            if agent is None or not agent.connected:
                missing: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
                missing.set_exception(
                    InstancePreemptedError(node.node, "the node is not connected (being replaced?)")
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
            self._collect(cell, futures)
            raise
        self._collect(cell, futures)
        return cell

    def unsent(self, nodes: list[NodeInstance], push: dict[str, Payload]) -> dict[str, Payload]:
        """The variables of ``push`` that some of ``nodes`` do not hold yet."""
        agents = [self.bootstrapper.agents.get(n.instance.id) for n in nodes]
        return {
            name: payload
            for name, payload in push.items()
            if payload.inline or any(a is None or payload.key not in a.blobs for a in agents)
        }

    def _relay(self) -> fanout.Relay | None:
        """The current cluster's head node as a relay of blobs (None with one node)."""
        record = self.current
        if record is None:
            return None
        nodes = record.node_instances()
        if len(nodes) < 2:
            return None
        head = self.bootstrapper.agents.get(nodes[0].instance.id)
        if head is None or not head.connected:
            return None
        token = self._relay_tokens.setdefault(record.id, secrets.token_hex(16))
        instance = nodes[0].instance
        return fanout.Relay(head, instance.private_ip or instance.ip, token)

    async def _stop(
        self,
        cell: CellRun,
        futures: dict[int, asyncio.Future[Answer]],
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
        for node in stuck:
            try:
                agents[node.instance.id].kill(cell.task_ids[node.node])
                cell.killed.append(node.node)
            except Exception:
                pass
        if stuck:
            await asyncio.wait([futures[n.node] for n in stuck], timeout=KILL_GRACE)

    async def replacement(self, node: int) -> NodeInstance | None:
        """Wait for the node replacing a lost ``node`` to be ready (None if not replaced)."""
        record = self.ready_cluster()
        watch = self.watches.get(record.id)
        if watch is None:
            return None
        return await watch.replacement(
            node, record.spec.launch_timeout + record.spec.bootstrap_timeout
        )

    @staticmethod
    def _collect(cell: CellRun, futures: dict[int, asyncio.Future[Answer]]) -> None:
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
        await self.shutdown(record.id)
        return record

    async def shutdown(self, cluster_id: str) -> None:
        """Destroy a cluster (shielded: an interrupt does not stop it halfway)."""
        watch = self.watches.pop(cluster_id, None)
        if watch is not None:
            watch.stop()
        await asyncio.shield(self.bus.request(lambda reply: ShutdownRequested(cluster_id, reply)))

    async def aclose(self) -> None:
        """Destroy every live cluster, then stop the bus."""
        for record in self.registry.live():
            await self.shutdown(record.id)
        await self.bus.aclose()

    async def attach(self, name: str) -> ClusterRecord:
        """Take over a cluster started with ``--keep`` by a kernel that is gone.

        Its instances, keys and host keys come from the ledger; each agent (which outlived
        the old kernel) is reached again over SSH and the cluster becomes this kernel's.
        """
        if self.current is not None and self.current.state is ClusterState.READY:
            raise UsageError(f"cluster {self.current.id} is up; `%skyward down` it first")
        entries = [
            e
            for e in self.ledger.entries()
            if name in (e.cluster_id, e.spec.get("name")) and e.instance_id
        ]
        if not entries:
            raise UsageError(f"no cluster {name!r} in the ledger")
        alive = [e for e in entries if e.kernel.alive()]
        if alive and alive[0].kernel_pid != KernelIdentity.current().pid:
            raise UsageError(
                f"cluster {name} belongs to a running kernel (pid {alive[0].kernel_pid})"
            )
        first = entries[0]
        spec = spec_from_dict(first.spec)
        provider = self.provider_for(first.provider, spec)
        public = await asyncio.to_thread(_read_public_key, first.key_path)
        keys = ClusterKeys(first.key_path, public)
        record = ClusterRecord(first.cluster_id, spec, provider, keys, f"attach-{first.cluster_id}")
        noted = self.ledger.cluster(record.id)
        if noted is None:  # launched by a version that kept no cluster records
            self.ledger.begin_cluster(first.provider, record.id, spec, first.keep, first.key_path)
        # Rebuilt from the ledger: nothing of the live cluster (rules, keys) is touched.
        record.context = await provider.restore(
            record.id,
            spec,
            noted.resources if noted is not None else {},
            resource_note(self.ledger, record.id),
        )
        for entry in entries:
            instance = Instance(
                entry.instance_id or "",
                "running",
                entry.ip,
                entry.private_ip,
                entry.ssh_port,
                offer=Offer(first.provider, "", price_per_hour=entry.price_per_hour),
            )
            node = NodeInstance(instance, entry.node, provider.name, entry.ssh_user, entry.key_path)
            record.instances[instance.id] = InstanceRecord(
                instance.id,
                entry.node,
                entry.host_public_key,
                entry.launched_at,
                node,
                ready=True,
                ledger_key=entry.key,
            )
        self.registry.add(record)
        await asyncio.gather(
            *(
                self.bootstrapper.attach(r.node_instance, r.host_public_key, record)
                for r in record.instances.values()
                if r.node_instance is not None
            )
        )
        self.ledger.adopt([e.key for e in entries] + [cluster_key(record.id)])
        record.state = ClusterState.READY
        # What this kernel now knows of the cluster, for the panel and anyone listening.
        for node in record.node_instances():
            self.bus.publish(InstanceProvisioned(record.request_id, node))
            self.bus.publish(InstanceBootstrapped(node))
        nodes = tuple(record.node_instances())
        self.bus.publish(ClusterReady(Cluster(record.id, provider.name, spec, nodes)))
        self.current = record
        self.configure_nodes(record)
        watch = self.watches[record.id] = ClusterWatch(self, record)
        watch.start()
        return record

    async def destroy_orphans(self, entries: list[LedgerEntry]) -> list[str]:
        """Destroy ledger entries left by dead kernels; returns what could not be destroyed.

        Each cluster's context is rebuilt from the ledger (``restore``: no offer, no
        capacity, no key needed, nothing created), its instances destroyed and confirmed,
        its shared resources torn down, and its entries removed. Clusters of dead kernels
        that left shared resources but no instance are torn down too.
        """
        failures: list[str] = []
        by_cluster: dict[str, list[LedgerEntry]] = {}
        for entry in entries:
            by_cluster.setdefault(entry.cluster_id, []).append(entry)
        for leftover in self.ledger.leftovers():
            by_cluster.setdefault(leftover.cluster_id, [])
        for cluster_id, group in by_cluster.items():
            noted = self.ledger.cluster(cluster_id)
            origin = group[0] if group else noted  # each names the provider and the spec
            if origin is None:
                continue
            try:
                spec = spec_from_dict(origin.spec)
                provider = self.provider_for(origin.provider, spec)
                resources = noted.resources if noted is not None else {}
                context = await provider.restore(cluster_id, spec, resources)
                for entry in group:
                    if entry.instance_id:
                        await provider.destroy(context, entry.instance_id)
                        self.ledger.remove(entry.key)  # confirmed gone
                await provider.teardown(context)
            except Exception as exc:
                failures.append(f"{cluster_id}: {exc}")
                continue
            for entry in group:
                self.ledger.remove(entry.key)
            if not any(e.cluster_id == cluster_id for e in self.ledger.entries()):
                self.ledger.forget_cluster(cluster_id)
                await forget_cluster_keys(cluster_id)  # its destruction is confirmed
        return failures

    def close_sync(self, timeout: float = 60.0) -> None:
        """Destroy every live instance without the kernel's loop (at interpreter exit).

        The providers' ``destroy`` runs on a fresh loop in a helper thread, so this works
        whether or not the kernel's loop is still running; that loop's ``to_thread``
        starts plain threads, since at exit ``concurrent.futures`` takes no new work.
        """
        live = [
            (record, iid)
            for record in self.registry.live()
            if not record.spec.keep
            for iid in list(record.instances)
        ]
        if not live:
            return

        async def destroy_all() -> None:
            async def one(record: ClusterRecord, iid: str) -> None:
                try:
                    await record.provider.destroy(record.context, iid)
                    gone = record.instances.pop(iid, None)
                    if gone is not None and gone.ledger_key:
                        self.ledger.remove(gone.ledger_key)
                except Exception:
                    log.exception("skyward: could not destroy %s at exit", iid)

            await asyncio.gather(*(one(r, i) for r, i in live))
            for record in {id(r): r for r, _ in live}.values():
                try:
                    await record.provider.teardown(record.context)
                    if not record.instances:
                        self.ledger.forget_cluster(record.id)
                        await forget_cluster_keys(record.id)
                except Exception:
                    log.exception("skyward: could not tear down %s at exit", record.id)
                record.state = ClusterState.DESTROYED

        def run() -> None:
            with asyncio.Runner() as runner:
                runner.get_loop().set_default_executor(PlainThreadExecutor())
                runner.run(destroy_all())

        thread = threading.Thread(target=run, name="skyward-exit", daemon=True)
        thread.start()
        thread.join(timeout)


def _read_public_key(private_key_path: str) -> str:
    """The public line beside a cluster's private key ("" if it is gone)."""
    public = Path(private_key_path + ".pub")
    return public.read_text().strip() if public.exists() else ""
