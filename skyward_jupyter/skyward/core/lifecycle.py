"""The cluster and node lifecycles: requests in, facts out, in the documented order.

``ClusterRequested`` → shared resources → ``ClusterProvisioned`` → per node
``InstanceRequested`` → ``InstanceLaunched`` → ``InstanceRunning`` → ``InstanceProvisioned``
→ ``BootstrapRequested`` (answered by the bootstrapper with ``InstanceBootstrapped`` or
``BootstrapFailed``) → ``ClusterReady``. ``ShutdownRequested`` → ``InstanceDestroyed`` per
instance → ``ClusterDestroyed``. Any failure becomes ``Error`` and the cluster is torn down:
nothing stays launched after a failed or interrupted ``up``.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from ..errors import SkywardError
from ..events import (
    BootstrapFailed,
    BootstrapRequested,
    ClusterDestroyed,
    ClusterProvisioned,
    ClusterReady,
    ClusterRequested,
    Error,
    InstanceBootstrapped,
    InstanceDestroyed,
    InstanceLaunched,
    InstanceProvisioned,
    InstanceReplaced,
    InstanceRequested,
    InstanceRunning,
    NodeInstance,
    ShutdownRequested,
)
from ..model import Cluster, ClusterSpec
from .bus import EventBus, respond
from .ledger import Ledger
from .provider import ClusterKeys, LaunchRequest, Provider, ResourceNote, no_note
from .registry import ClusterRecord, ClusterState, InstanceRecord, NodeState, Registry

__all__ = ["Lifecycle", "ProviderFor", "describe", "new_cluster_id", "resource_note"]

log = logging.getLogger("skyward")

ProviderFor = Callable[[str, ClusterSpec], "Provider[Any]"]
KeyMaker = Callable[[str], Awaitable[ClusterKeys]]
HostKeyMaker = Callable[[], tuple[str, str]]
KeyForgetter = Callable[[str], Awaitable[None]]


def new_cluster_id() -> str:
    """A short id that is unique enough to tag cloud resources with."""
    return "sky-" + secrets.token_hex(4)


def resource_note(ledger: Ledger | None, cluster_id: str) -> ResourceNote:
    """The ``note`` a provider calls before creating a shared resource of ``cluster_id``:
    a ledger write, so that the resource is known before it exists."""
    if ledger is None:
        return no_note

    def note(kind: str, resource_id: str) -> None:
        ledger.note_resource(cluster_id, kind, resource_id)

    return note


class _Tasks:
    """The tasks working on one cluster, so a shutdown can cancel and await them."""

    def __init__(self) -> None:
        self.up: asyncio.Task[Any] | None = None
        self.workers: set[asyncio.Task[Any]] = set()
        self.launches: set[asyncio.Task[Any]] = set()


class Lifecycle:
    """Turns cluster, instance and shutdown requests into facts on the bus."""

    def __init__(
        self,
        bus: EventBus,
        registry: Registry,
        provider_for: ProviderFor,
        make_keys: KeyMaker,
        make_host_key: HostKeyMaker,
        ledger: Ledger | None = None,
        forget_keys: KeyForgetter | None = None,
    ) -> None:
        self._bus = bus
        self._registry = registry
        self._provider_for = provider_for
        self._make_keys = make_keys
        self._make_host_key = make_host_key
        self._ledger = ledger
        self._forget_keys = forget_keys
        self._tasks: dict[str, _Tasks] = {}
        self._shutdowns: dict[str, asyncio.Task[None]] = {}
        bus.subscribe(ClusterRequested, self._on_cluster_requested)
        bus.subscribe(InstanceRequested, self._on_instance_requested)
        bus.subscribe(ShutdownRequested, self._on_shutdown_requested)

    # -- cluster ------------------------------------------------------------------------

    async def _on_cluster_requested(self, request: ClusterRequested) -> None:
        spec = request.spec
        try:
            provider = self._provider_for(request.provider, spec)
        except Exception as exc:
            respond(self._bus, request, Error(request.request_id, describe(exc), fatal=True))
            return
        cluster_id = new_cluster_id()
        record = ClusterRecord(cluster_id, spec, provider, None, request.request_id)
        self._registry.add(record)
        self._tasks.setdefault(cluster_id, _Tasks()).up = asyncio.current_task()
        try:
            record.keys = await self._make_keys(cluster_id)
            await self._bring_up(request, record)
        except asyncio.CancelledError:
            await self._shielded_destroy(record, cancel_up=False)
            raise
        except Exception as exc:
            record.move(ClusterState.FAILED)
            error = Error(request.request_id, f"cluster {cluster_id}: {describe(exc)}", True)
            self._bus.publish(error)
            await self._shielded_destroy(record, cancel_up=False)
            if request.reply_to is not None:
                request.reply_to(error)

    async def _bring_up(self, request: ClusterRequested, record: ClusterRecord) -> None:
        spec = record.spec
        record.move(ClusterState.PROVISIONING)
        keys = record.require_keys()
        if self._ledger is not None:
            self._ledger.begin_cluster(
                record.provider.name, record.id, spec, spec.keep, keys.private_key_path
            )
        note = resource_note(self._ledger, record.id)
        record.context = await record.provider.prepare(record.id, spec, keys, note)
        self._bus.publish(ClusterProvisioned(request.request_id, record.id, request.provider))
        loop = asyncio.get_running_loop()
        answers: list[asyncio.Future[Any]] = []
        for node in range(spec.nodes):
            answer: asyncio.Future[Any] = loop.create_future()
            answers.append(answer)
            self._bus.publish(
                InstanceRequested(
                    f"{request.request_id}/node-{node}",
                    request.provider,
                    record.id,
                    node,
                    reply_to=_setter(answer),
                )
            )
        pending = set(answers)
        try:
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for future in done:
                    answer = future.result()
                    if isinstance(answer, Error):
                        raise SkywardError(answer.message)
        finally:
            for future in pending:
                future.cancel()
        record.move(ClusterState.READY)
        record.ready_at = loop.time()
        cluster = Cluster(record.id, request.provider, spec, tuple(record.node_instances()))
        respond(self._bus, request, ClusterReady(cluster))

    # -- node ---------------------------------------------------------------------------

    async def _on_instance_requested(self, request: InstanceRequested) -> None:
        try:
            record = self._registry.get(request.cluster_id)
        except KeyError:
            message = f"no cluster {request.cluster_id} for node {request.node_id}"
            respond(self._bus, request, Error(request.request_id, message))
            return
        tasks = self._tasks.setdefault(record.id, _Tasks())
        me = asyncio.current_task()
        if me is not None:
            tasks.workers.add(me)
        try:
            if request.replacing is not None and request.replacing in record.instances:
                await self._destroy_instance(record, request.replacing)  # a lost node's remains
            answer = await self._bring_up_node(request, record, tasks)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            message = f"node {request.node_id}: {describe(exc)}"
            _settle(record, request, failed=True)
            respond(self._bus, request, Error(request.request_id, message))
            return
        finally:
            if me is not None:
                tasks.workers.discard(me)
        _settle(record, request, failed=isinstance(answer, BootstrapFailed))
        if isinstance(answer, BootstrapFailed):
            message = f"node {request.node_id}: bootstrap failed in phase '{answer.phase}'"
            respond(self._bus, request, Error(request.request_id, f"{message}: {answer.error}"))
        else:
            if request.replacing is not None:
                self._bus.publish(
                    InstanceReplaced(request.request_id, request.replacing, answer.instance)
                )
            if request.reply_to is not None:
                request.reply_to(answer)

    async def _bring_up_node(
        self, request: InstanceRequested, record: ClusterRecord, tasks: _Tasks
    ) -> InstanceBootstrapped | BootstrapFailed:
        provider, spec, keys = record.provider, record.spec, record.require_keys()
        host_key, host_public_key = self._make_host_key()
        launch_request = LaunchRequest(
            record.id, request.node_id, spec, keys, host_key, host_public_key
        )

        ledger, key = self._ledger, ""
        if ledger is not None:
            key = ledger.begin(
                provider.name,
                record.id,
                request.node_id,
                spec,
                keep=spec.keep,
                host_public_key=host_public_key,
                ssh_user=provider.ssh_user,
                key_path=keys.private_key_path,
            )

        _step(record, request.node_id, NodeState.LAUNCHING)

        def recorded(task: asyncio.Task[str]) -> None:
            tasks.launches.discard(task)
            if not task.cancelled() and task.exception() is None:
                iid = task.result()
                record.instances[iid] = InstanceRecord(
                    iid, request.node_id, host_public_key, ledger_key=key
                )
                record.slot(request.node_id).instance_id = iid
                if ledger is not None:
                    ledger.update(key, instance_id=iid)
            elif ledger is not None:
                ledger.remove(key)  # the provider launched nothing (or cleaned up itself)

        # The launch runs to completion even if we are cancelled, and the instance is
        # recorded the moment its id is known, so a shutdown can always find it.
        launch = asyncio.ensure_future(provider.launch(record.context, launch_request))
        tasks.launches.add(launch)
        launch.add_done_callback(recorded)
        instance_id = await asyncio.shield(launch)
        self._bus.publish(
            InstanceLaunched(
                request.request_id, record.id, request.node_id, request.provider, instance_id
            )
        )
        async with asyncio.timeout(spec.launch_timeout):
            instance = await provider.wait_running(record.context, instance_id, spec.launch_timeout)
        if ledger is not None:
            price = instance.offer.price_per_hour if instance.offer else 0.0
            if instance.spot and instance.offer and instance.offer.spot_price_per_hour:
                price = instance.offer.spot_price_per_hour
            ledger.update(
                key,
                ip=instance.ip,
                private_ip=instance.private_ip,
                ssh_port=instance.ssh_port,
                price_per_hour=price,
            )
        self._bus.publish(
            InstanceRunning(
                request.request_id,
                record.id,
                request.node_id,
                request.provider,
                instance,
                ssh_user=provider.ssh_user,
                ssh_key_path=keys.private_key_path,
            )
        )
        node_instance = NodeInstance(
            instance,
            request.node_id,
            request.provider,
            provider.ssh_user,
            keys.private_key_path,
        )
        record.instances[instance_id].node_instance = node_instance
        _step(record, request.node_id, NodeState.BOOTSTRAPPING)
        self._bus.publish(InstanceProvisioned(request.request_id, node_instance))
        answer = await self._bus.request(
            lambda reply: BootstrapRequested(request.request_id, node_instance, record.id, reply),
            timeout=spec.bootstrap_timeout,
        )
        if isinstance(answer, InstanceBootstrapped):
            record.instances[instance_id].ready = True
            return answer
        if isinstance(answer, BootstrapFailed):
            return answer
        raise SkywardError(f"the bootstrap answered {type(answer).__name__}")

    # -- shutdown -----------------------------------------------------------------------

    async def _on_shutdown_requested(self, request: ShutdownRequested) -> None:
        try:
            record = self._registry.get(request.cluster_id)
        except KeyError:
            respond(self._bus, request, Error("", f"no cluster {request.cluster_id}"))
            return
        await self._shielded_destroy(record)
        if request.reply_to is not None:
            request.reply_to(ClusterDestroyed(record.id))

    async def destroy_cluster(self, record: ClusterRecord) -> None:
        """Destroy every instance of ``record``, then its shared resources, its ledger
        records and its keys: the one path by which anything launched is destroyed
        (shutdown, a failed ``up``, the orphans of dead kernels)."""
        self._registry.add(record)
        await self._shielded_destroy(record)

    async def _shielded_destroy(self, record: ClusterRecord, cancel_up: bool = True) -> None:
        """Destroy everything of ``record`` once, even if the caller is cancelled.

        ``cancel_up`` stops a cluster's ``up`` still in progress; the ``up`` itself passes
        False when it is the one cleaning up after its own failure or cancellation.
        """
        task = self._shutdowns.get(record.id)
        if task is None:
            task = asyncio.ensure_future(self._destroy(record, cancel_up))
            self._shutdowns[record.id] = task
        await asyncio.shield(task)

    async def _destroy(self, record: ClusterRecord, cancel_up: bool) -> None:
        if record.state is ClusterState.DESTROYED:
            return
        record.move(ClusterState.SHUTTING_DOWN)
        tasks = self._tasks.get(record.id, _Tasks())
        if cancel_up and tasks.up is not None and not tasks.up.done():
            tasks.up.cancel()
        workers = [t for t in tasks.workers if not t.done()]
        for worker in workers:
            worker.cancel()
        await asyncio.gather(*workers, *tasks.launches, return_exceptions=True)
        await asyncio.gather(
            *(self._destroy_instance(record, iid) for iid in list(record.instances)),
        )
        torn_down = await self._teardown(record)
        if torn_down and not record.instances and self._ledger is not None:
            self._ledger.forget_cluster(record.id)
        if torn_down and not record.instances and self._forget_keys is not None:
            # Only now is nothing left that the key could reach (or that needs it).
            try:
                await self._forget_keys(record.id)
            except OSError as exc:
                log.warning("skyward: could not delete the keys of %s: %s", record.id, exc)
        for slot in record.nodes.values():
            slot.move(NodeState.DESTROYED)
        record.move(ClusterState.DESTROYED)
        self._bus.publish(ClusterDestroyed(record.id))

    async def _teardown(self, record: ClusterRecord) -> bool:
        """Remove the cluster's shared resources; whether that was confirmed.

        A ``prepare`` that failed or was cancelled returned no context, yet may have
        created some: the context is then rebuilt from what it noted in the ledger.
        """
        try:
            if record.context is None:
                noted = self._ledger.cluster(record.id) if self._ledger is not None else None
                if noted is None or not noted.resources:
                    return True
                record.context = await record.provider.restore(
                    record.id, record.spec, noted.resources, resource_note(self._ledger, record.id)
                )
            await record.provider.teardown(record.context)
        except Exception as exc:
            self._bus.publish(Error(record.request_id, f"teardown of {record.id}: {exc}", True))
            return False
        return True

    async def destroy_instance(self, record: ClusterRecord, instance_id: str) -> None:
        """Destroy one instance of a live cluster (a lost node that is not replaced)."""
        await self._destroy_instance(record, instance_id)

    async def _destroy_instance(self, record: ClusterRecord, instance_id: str) -> None:
        try:
            await record.provider.destroy(record.context, instance_id)
        except Exception as exc:
            message = f"could not destroy instance {instance_id}: {describe(exc)}"
            self._bus.publish(Error(record.request_id, message, fatal=True))
            return
        gone = record.instances.pop(instance_id, None)
        if self._ledger is not None and gone is not None and gone.ledger_key:
            self._ledger.remove(gone.ledger_key)
        self._bus.publish(InstanceDestroyed(instance_id))


def _step(record: ClusterRecord, node: int, state: NodeState) -> None:
    """Move a node along its bring-up, unless it is being replaced: a replacement's launch
    and bootstrap are steps of ``replacing``, which only their end changes."""
    slot = record.slot(node)
    if slot.state is not NodeState.REPLACING:
        slot.move(state)


def _settle(record: ClusterRecord, request: InstanceRequested, failed: bool) -> None:
    """A node's bring-up (or replacement) ended: ``ready``, or ``failed`` / ``lost``."""
    slot = record.slot(request.node_id)
    if slot.state in (NodeState.DESTROYED, NodeState.LOST, NodeState.FAILED):
        return
    if slot.state is NodeState.REPLACING:
        slot.move(NodeState.LOST if failed else NodeState.READY)
    else:
        slot.move(NodeState.FAILED if failed else NodeState.READY)


def _setter(future: asyncio.Future[Any]) -> Callable[[Any], None]:
    def reply(fact: Any) -> None:
        if not future.done():
            future.set_result(fact)

    return reply


def describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    text = str(exc)
    return text if isinstance(exc, SkywardError) and text else f"{type(exc).__name__}: {text}"
