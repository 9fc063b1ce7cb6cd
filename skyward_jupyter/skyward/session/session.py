"""The kernel's session with its cluster: the one object the notebook layer talks to.

It wires the layers together (the bus, the core's lifecycle, watch, attach and orphan
handlers, the providers, the bootstrapper and the agents' channels) and offers the
verbs the magics need: ``up``, ``run``, ``status``, ``down``, ``attach``, ``offers``,
file transfers, and ``events`` (the bus) to listen to. Nothing above it needs to know
the providers or the transport.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets as tokens
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

from ..core.attach import Attacher
from ..core.bus import EventBus
from ..core.exit import destroy_at_exit
from ..core.ledger import ClusterEntry, Ledger, LedgerEntry
from ..core.lifecycle import Lifecycle, ProviderFor
from ..core.orphans import OrphanCleaner
from ..core.provider import Provider
from ..core.registry import ClusterRecord, ClusterState, InstanceRecord, Registry
from ..core.requests import AttachRequested, OrphansDestroyed, OrphansDestroyRequested
from ..core.watch import Watcher
from ..errors import BootstrapError, LedgerError, ProvisionError, UsageError
from ..events import (
    BootstrapFailed,
    ClusterReady,
    ClusterRequested,
    Error,
    InstanceReplaced,
    NodeInstance,
    ShutdownRequested,
)
from ..model import ClusterSpec, Offer
from ..payload import Payload
from ..protocol import Run
from ..transport import fanout
from ..transport.agents import Agents
from ..transport.bootstrap import Bootstrapper
from ..transport.environment import distribution_of_module
from ..transport.keys import data_dir, forget_cluster_keys, generate_host_key, make_cluster_keys
from .cells import CellRun, Cells, SecondInterrupt
from .files import Progress, transfer
from .local_code import CODE
from .nodes import node_settings
from .selection import select_nodes
from .status import ClusterStatus, Destroyed, NodeStatus, cluster_status

__all__ = [
    "CellRun",
    "ClusterStatus",
    "Destroyed",
    "NodeStatus",
    "Session",
    "distribution_of_module",
]


class Session:
    """This kernel's session with its cluster (one current cluster at a time)."""

    def __init__(self, provider_for: ProviderFor | None = None) -> None:
        self.bus = EventBus()
        self.registry = Registry()
        self.provider_for = provider_for or _provider_for
        self.ledger = Ledger(data_dir() / "ledger.json")
        self.agents = Agents(self.bus)
        self.lifecycle = Lifecycle(
            self.bus,
            self.registry,
            self.provider_for,
            make_cluster_keys,
            generate_host_key,
            ledger=self.ledger,
            forget_keys=forget_cluster_keys,
        )
        self.bootstrapper = Bootstrapper(self.bus, self.registry, self.agents)
        self.bootstrapper.on_host_key = self._host_key_rotated
        self.watcher = Watcher(self.bus, self.registry, self.lifecycle, self.agents)
        Attacher(self.bus, self.registry, self.ledger, self.provider_for, self.agents)
        OrphanCleaner(self.bus, self.ledger, self.provider_for, self.lifecycle)
        self.cells = Cells(self.agents)
        self.current: ClusterRecord | None = None
        self.colors = ""
        """The kernel's IPython traceback colours, for the nodes' tracebacks."""
        self._secrets: dict[str, dict[str, str]] = {}  # --env values, by cluster
        self._numbers = itertools.count(1)
        self.bus.subscribe(InstanceReplaced, self._on_replaced)

    @property
    def events(self) -> EventBus:
        """The bus every request and fact of this session travels on."""
        return self.bus

    # -- up, attach, down ------------------------------------------------------------

    def is_up(self) -> bool:
        """Whether a cluster is up (or on its way up) now."""
        record = self.current
        return record is not None and record.state not in (
            ClusterState.DESTROYED,
            ClusterState.FAILED,
        )

    async def up(self, spec: ClusterSpec, env: dict[str, str] | None = None) -> ClusterReady:
        """Provision and bootstrap a cluster; raise with the reason if it fails.

        ``env`` holds the values of ``spec.env``: secrets, kept here (never in the spec)
        and sent to each node once, over the agent channel. If this coroutine is cancelled
        (an interrupted cell), everything launched so far is destroyed first.
        """
        if self.is_up():
            raise UsageError(f"cluster {self.current.id} is already up; `%skyward down` it first")  # type: ignore[union-attr]
        request_id = "up-" + tokens.token_hex(4)
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
            self._configure(record)
            return answer
        if failures:
            first = failures[0]
            message, _, output = first.error.partition("\n")
            raise BootstrapError(first.instance.node, first.phase, message, output)
        raise ProvisionError(answer.message if isinstance(answer, Error) else str(answer))

    async def _abort(self, request_id: str) -> None:
        for _ in range(100):
            record = self.registry.by_request(request_id)
            if record is not None:
                await self.shutdown(record.id)
                return
            await asyncio.sleep(0.01)

    async def attach(self, name: str) -> ClusterStatus:
        """Take over a cluster started with ``--keep`` by a kernel that is gone."""
        if self.current is not None and self.current.state is ClusterState.READY:
            raise UsageError(f"cluster {self.current.id} is up; `%skyward down` it first")
        request_id = "attach-" + tokens.token_hex(4)
        answer = await self.bus.request(lambda reply: AttachRequested(request_id, name, reply))
        if isinstance(answer, Error):
            raise UsageError(answer.message)
        record = self.registry.get(answer.cluster.id)
        self.current = record
        self._configure(record)
        return cluster_status(record)

    async def down(self) -> Destroyed:
        """Destroy the current cluster and everything it launched."""
        record = self.current
        if record is None or record.state is ClusterState.DESTROYED:
            raise UsageError("no cluster is up")
        instances = len(record.instances)
        start = time.monotonic()
        await self.shutdown(record.id)
        return Destroyed(record.id, instances, len(record.instances), time.monotonic() - start)

    def on_notice(self, notice: Callable[[str], None]) -> Callable[[], None]:
        """Call ``notice`` with each warning about the current cluster (a cost nearing
        ``--max-cost``, an automatic shutdown); returns an unsubscriber."""
        request_id = self.current.request_id if self.current is not None else ""

        def heard(error: Error) -> None:
            if error.request_id == request_id and not error.fatal:
                notice(error.message)

        return self.bus.subscribe(Error, heard)

    async def shutdown(self, cluster_id: str) -> None:
        """Destroy a cluster (shielded: an interrupt does not stop it halfway)."""
        await asyncio.shield(self.bus.request(lambda reply: ShutdownRequested(cluster_id, reply)))

    # -- status ------------------------------------------------------------------------

    def status(self) -> ClusterStatus | None:
        """The current cluster and each of its nodes (None when there is none)."""
        return cluster_status(self.current) if self.current is not None else None

    def ledger_lines(self) -> list[str]:
        """What the ledger says of itself (damage found and repaired), one line each."""
        return self.ledger.check()

    def ledger_notices(self) -> list[str]:
        """What happened to the ledger since it was last read (repairs), once each."""
        return self.ledger.notices()

    # -- run ---------------------------------------------------------------------------

    def ready_cluster(self) -> ClusterRecord:
        """The current cluster, if it is ready for cells."""
        record = self.current
        if record is None or record.state is not ClusterState.READY:
            raise UsageError("no cluster is up: run `%skyward up --provider container` first")
        return record

    def size(self) -> int:
        """How many nodes the ready cluster has (its node ids, whatever their state)."""
        return len(self.ready_cluster().nodes)

    async def select(
        self,
        targets: Iterable[int] | None,
        wait: bool = True,
        timeout: float | None = None,
        say: Callable[[str], None] = print,
    ) -> list[NodeInstance]:
        """The nodes a cell should run on (every node of the cluster when ``targets`` is
        None); see ``session.selection``. Never fewer nodes than asked for."""
        record = self.ready_cluster()
        return await select_nodes(record, self.watcher, targets, wait, timeout, say)

    async def replacement(self, node: int) -> NodeInstance | None:
        """Wait for the node replacing a lost ``node`` to be ready (None if not replaced)."""
        record = self.ready_cluster()
        limit = record.spec.launch_timeout + record.spec.bootstrap_timeout
        return await self.watcher.replacement(record.id, node, limit)

    def prepare(self, nodes: list[NodeInstance], count: int = 0) -> CellRun:
        """A new cell run over ``nodes`` (no I/O yet); ``count`` is the kernel's
        execution count of the cell (its name in the panel: ``cell N``)."""
        record = self.ready_cluster()
        number = next(self._numbers)
        return CellRun(f"{record.id}-cell{number}", nodes, f"cell {count or number}")

    def unsent(self, nodes: list[NodeInstance], push: dict[str, Payload]) -> dict[str, Payload]:
        """The variables of ``push`` that some of ``nodes`` do not hold yet."""
        return self.cells.unsent(nodes, push)

    async def before_cell(self, nodes: list[NodeInstance]) -> None:
        """Bring the nodes' copy of the kernel's local modules up to date."""
        await CODE.before_cell([(iid, c, a) for _, iid, c, a in self._links(nodes)])

    async def run(
        self,
        cell: CellRun,
        code: str,
        push: dict[str, Payload] | None = None,
        pull: list[str] | None = None,
        timeout: float | None = None,
        second_interrupt: SecondInterrupt | None = None,
        count: int = 0,
        max_output: int = 10_000_000,
    ) -> CellRun:
        """Run ``code`` on the cell's nodes concurrently; collect each node's answer
        (see ``session.cells``)."""
        record = self.ready_cluster()
        payloads = list((push or {}).values())
        run = Run("", code, count, fanout.run_push(push or {}), tuple(pull or ()), max_output)
        relay = self.cells.relay(record.id, record.node_instances())
        return await self.cells.run(cell, run, payloads, relay, timeout, second_interrupt)

    # -- files -------------------------------------------------------------------------

    async def transfer(
        self,
        name: str,
        nodes: list[NodeInstance],
        args: Any,
        say: Callable[[str], None],
        warn: Callable[[str], None],
        progress: Progress,
    ) -> None:
        """``%skyward sync|get|put`` to ``nodes`` with the magic's parsed ``args``."""
        links = self._links(nodes)
        targets = [(n, iid, c) for n, iid, c, _ in links]
        record = self.current
        relay = None
        if name != "get" and record is not None and all(a.connected for *_, a in links):
            head = self.cells.relay(record.id, record.node_instances())
            if head is not None and (len(links) > 1 or head.uploader is not None):
                relay = (head, [a for *_, a in links])
        await transfer(targets, name, args, say, warn, progress, relay)

    def sync_reports(self) -> tuple[list[Any], list[str]]:
        """The package sync's report of each node of the current cluster, and the
        packages left behind (frontend only)."""
        boot = self.bootstrapper
        ids = list(self.current.instances) if self.current is not None else []
        return [boot.sync_reports[i] for i in ids if i in boot.sync_reports], boot.left_behind

    # -- offers ------------------------------------------------------------------------

    async def offers(
        self, spec: ClusterSpec, names: list[str] | None = None
    ) -> tuple[list[tuple[str, Offer]], dict[str, str]]:
        """Matching offers of the configured providers (or of ``names``), cheapest first,
        and the providers skipped with why."""
        from ..providers.offers import gather_offers

        return await gather_offers(spec, names)

    @staticmethod
    async def choose_provider(spec: ClusterSpec) -> tuple[ClusterSpec, str, Offer, int]:
        """``up`` without ``--provider``: the spec on the cheapest configured provider,
        its name, the offer and how many offers were compared."""
        from ..providers.offers import choose_offer, gather_offers

        rows, skipped = await gather_offers(spec)
        name, offer = choose_offer(rows, skipped, spec)
        return replace(spec, provider=name), name, offer, len(rows)

    @staticmethod
    def format_offers(rows: list[tuple[str, Offer]], skipped: dict[str, str]) -> str:
        """The offers as a text table, cheapest first, with the skipped providers below."""
        from ..providers.offers import format_offers

        return format_offers(rows, skipped)

    @staticmethod
    def provider_names() -> list[str]:
        """The names ``--provider`` accepts."""
        from ..providers import PROVIDERS

        return sorted(PROVIDERS)

    # -- orphans and exit --------------------------------------------------------------

    def orphans(self) -> tuple[list[LedgerEntry], list[ClusterEntry]]:
        """Instances of dead kernels, and shared resources of clusters with no instance
        (a ledger that cannot be read raises ``LedgerError`` naming its file)."""
        try:
            return self.ledger.orphans(), self.ledger.leftovers()
        except LedgerError:
            raise
        except Exception as exc:
            raise LedgerError(f"cannot read the ledger {self.ledger.path}: {exc}") from exc

    async def destroy_orphans(self, entries: list[LedgerEntry]) -> OrphansDestroyed:
        """Destroy what dead kernels left (``entries``, and the leftovers)."""
        answer = await self.bus.request(
            lambda reply: OrphansDestroyRequested(tuple(entries), reply)
        )
        assert isinstance(answer, OrphansDestroyed)
        return answer

    def close_sync(self, timeout: float = 60.0) -> None:
        """Destroy every live cluster without the kernel's loop (at interpreter exit)."""
        destroy_at_exit(self.registry, self.ledger, forget_cluster_keys, timeout)

    async def aclose(self) -> None:
        """Destroy every live cluster, close the channels, then stop the bus."""
        for record in self.registry.live():
            await self.shutdown(record.id)
        await self.detach()

    async def detach(self) -> None:
        """Close the channels and stop the bus (what is launched is left to ``close_sync``)."""
        await self.agents.aclose()
        await self.bus.aclose()

    # -- wiring ------------------------------------------------------------------------

    def _configure(self, record: ClusterRecord) -> None:
        """Tell each node who it is in the cluster (again after a node is replaced,
        since the head's address may change)."""
        for iid, env, info in node_settings(record, self._secrets.get(record.id, {})):
            agent = self.agents.get(iid)
            if agent is not None and agent.connected:
                agent.configure(env, info, self.colors)

    def _on_replaced(self, event: InstanceReplaced) -> None:
        CODE.forget(event.old_id)
        found = self.registry.instance(event.new.instance.id)
        if found is not None and found[0] is self.current:
            self._configure(found[0])

    def _host_key_rotated(self, record: InstanceRecord, public_key: str) -> None:
        if record.ledger_key:
            self.ledger.update(record.ledger_key, host_public_key=public_key)

    def _links(self, nodes: list[NodeInstance]) -> list[tuple[int, str, Any, Any]]:
        """``(node, instance id, connection, agent)`` of each of ``nodes`` connected now."""
        found = []
        for n in nodes:
            iid = n.instance.id
            agent, connection = self.agents.get(iid), self.agents.connections.get(iid)
            if agent is not None and connection is not None:
                found.append((n.node, iid, connection, agent))
        return found


def _provider_for(name: str, spec: ClusterSpec) -> Provider[Any]:
    """Build the provider ``name`` with the options of ``spec`` (imported on first use)."""
    from ..providers import provider_for

    return provider_for(name, spec)
