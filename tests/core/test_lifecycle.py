"""The lifecycle's fact order and cleanup, with a fake provider and a fake bootstrapper.

The real path (container provider, SSH, agent) is covered by tests/integration.
"""

import asyncio
import os
import stat

import pytest
from skyward import (
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
    InstanceRunning,
    ShutdownRequested,
)
from skyward.core.bus import EventBus, respond
from skyward.core.lifecycle import Lifecycle
from skyward.core.provider import ClusterKeys, InstanceState, StatusReport
from skyward.core.registry import ClusterState, Registry
from skyward.model import ClusterSpec, Instance
from skyward.transport.keys import cluster_keys_dir, forget_cluster_keys, make_cluster_keys


class FakeProvider:
    name = "container"
    ssh_user = "me"

    def __init__(self, launch_delay=0.0):
        self.live: set[str] = set()
        self.torn_down = False
        self.launch_delay = launch_delay
        self.count = 0

    async def prepare(self, cluster_id, spec, keys, note=None):
        return {"cluster": cluster_id}

    async def restore(self, cluster_id, spec, resources, note=None):
        return {"cluster": cluster_id, "restored": dict(resources)}

    async def launch(self, context, request):
        await asyncio.sleep(self.launch_delay)
        self.count += 1
        iid = f"i-{request.node_id}-{self.count}"
        self.live.add(iid)
        return iid

    async def wait_running(self, context, instance_id, timeout):
        return Instance(instance_id, "running", "127.0.0.1", "127.0.0.1", 2222)

    async def status(self, context, instance_id):
        return StatusReport(InstanceState.RUNNING)

    async def destroy(self, context, instance_id):
        self.live.discard(instance_id)

    async def teardown(self, context):
        self.torn_down = True


def make(provider, fail_node=None, bootstrap_delay=0.0, real_keys=False, ledger=None):
    bus, registry = EventBus(), Registry()

    async def keys(cluster_id):
        return ClusterKeys("/dev/null", "ssh-ed25519 AAAA test")

    Lifecycle(
        bus,
        registry,
        lambda name, spec: provider,
        make_cluster_keys if real_keys else keys,
        lambda: ("priv", "pub"),
        ledger=ledger,
        forget_keys=forget_cluster_keys if real_keys else None,
    )

    async def bootstrap(request: BootstrapRequested):
        await asyncio.sleep(bootstrap_delay)
        if request.instance.node == fail_node:
            respond(bus, request, BootstrapFailed(request.instance, "packages", "no such package"))
        else:
            respond(bus, request, InstanceBootstrapped(request.instance))

    bus.subscribe(BootstrapRequested, bootstrap)
    log = []
    bus.subscribe_all(log.append)
    return bus, registry, log


def up(bus, nodes=2):
    spec = ClusterSpec("container", nodes=nodes)
    return bus.request(lambda r: ClusterRequested("req", "container", spec, r), timeout=5)


NODE_ORDER = [
    InstanceLaunched,
    InstanceRunning,
    InstanceProvisioned,
    BootstrapRequested,
    InstanceBootstrapped,
]


async def test_up_publishes_facts_in_order():
    provider = FakeProvider()
    bus, registry, log = make(provider)
    answer = await up(bus, nodes=2)
    assert isinstance(answer, ClusterReady)
    assert [n.node for n in answer.cluster.nodes] == [0, 1]
    kinds = [type(e) for e in log]
    assert kinds[0] is ClusterRequested and kinds[1] is ClusterProvisioned
    assert kinds[-1] is ClusterReady
    for node in (0, 1):
        mine = [
            type(e)
            for e in log
            if type(e) in NODE_ORDER
            and getattr(e, "node_id", None) in (node,)
            or (hasattr(e, "instance") and getattr(e.instance, "node", None) == node)
        ]
        assert mine == NODE_ORDER
    record = registry.get(answer.cluster.id)
    assert record.state is ClusterState.READY
    assert len(provider.live) == 2


async def test_shutdown_destroys_each_instance_then_the_cluster():
    provider = FakeProvider()
    bus, registry, log = make(provider)
    ready = await up(bus)
    cid = ready.cluster.id
    log.clear()
    answer = await bus.request(lambda r: ShutdownRequested(cid, r), timeout=5)
    assert answer == ClusterDestroyed(cid)
    kinds = [type(e) for e in log]
    assert kinds == [ShutdownRequested, InstanceDestroyed, InstanceDestroyed, ClusterDestroyed]
    assert provider.live == set() and provider.torn_down
    assert registry.get(cid).instances == {}


async def test_bootstrap_failure_becomes_error_and_tears_down():
    provider = FakeProvider()
    bus, registry, log = make(provider, fail_node=1)
    answer = await up(bus)
    assert isinstance(answer, Error) and answer.fatal
    assert "phase 'packages'" in answer.message and "node 1" in answer.message
    assert any(isinstance(e, BootstrapFailed) for e in log)
    kinds = [type(e) for e in log]
    fatal = next(i for i, e in enumerate(log) if isinstance(e, Error) and e.fatal)
    assert kinds[fatal + 1 :] == [InstanceDestroyed, InstanceDestroyed, ClusterDestroyed]
    assert provider.live == set()


async def test_shutdown_during_up_destroys_what_was_launched():
    provider = FakeProvider()
    bus, registry, log = make(provider, bootstrap_delay=10)
    pending = asyncio.ensure_future(up(bus, nodes=3))
    for _ in range(500):  # launches are immediate; the bootstraps then hang
        if len(provider.live) == 3:
            break
        await asyncio.sleep(0.01)
    cid = next(iter(registry.clusters))
    await bus.request(lambda r: ShutdownRequested(cid, r), timeout=5)
    assert provider.live == set()
    assert registry.get(cid).state is ClusterState.DESTROYED
    pending.cancel()
    with pytest.raises(asyncio.CancelledError):
        await pending


async def test_provider_error_becomes_fatal_error():
    class Broken(FakeProvider):
        async def wait_running(self, context, instance_id, timeout):
            raise OSError("no route")

    provider = Broken()
    bus, registry, log = make(provider)
    answer = await up(bus, nodes=1)
    assert isinstance(answer, Error) and "no route" in answer.message
    assert provider.live == set()


async def test_keys_are_created_private_and_deleted_once_destruction_is_confirmed(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    provider = FakeProvider()
    bus, registry, log = make(provider, real_keys=True)
    old = os.umask(0o022)
    try:
        ready = await up(bus)
    finally:
        os.umask(old)
    folder = cluster_keys_dir(ready.cluster.id)
    for path in (tmp_path / "data", folder.parent.parent, folder.parent, folder):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o700, path
    assert stat.S_IMODE(os.stat(folder / "id_ed25519").st_mode) == 0o600
    await bus.request(lambda r: ShutdownRequested(ready.cluster.id, r), timeout=5)
    assert provider.torn_down and not folder.exists()


@pytest.mark.parametrize("failing", ["destroy", "teardown"])
async def test_keys_stay_while_anything_may_be_left(tmp_path, monkeypatch, failing):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))

    class Stuck(FakeProvider):
        async def destroy(self, context, instance_id):
            if failing == "destroy" and instance_id.startswith("i-1-"):
                raise OSError("the API timed out")
            await super().destroy(context, instance_id)

        async def teardown(self, context):
            if failing == "teardown":
                raise OSError("the firewall is still in use")
            await super().teardown(context)

    bus, registry, log = make(Stuck(), real_keys=True)
    ready = await up(bus)
    await bus.request(lambda r: ShutdownRequested(ready.cluster.id, r), timeout=5)
    assert any(isinstance(e, Error) and e.fatal for e in log)
    assert (cluster_keys_dir(ready.cluster.id) / "id_ed25519").exists()


class Noting(FakeProvider):
    """Notes a firewall rule before "creating" it, as the cloud providers do; can fail
    right after creating it, as a prepare killed mid-way would leave it."""

    def __init__(self, fail_after_create=False):
        super().__init__()
        self.fail_after_create = fail_after_create
        self.created: list[str] = []
        self.noted_before_created: list[bool] = []
        self.restored: list[dict] = []

    async def prepare(self, cluster_id, spec, keys, note=None):
        name = f"skyward-{cluster_id}"
        note("firewall", name)
        self.noted_before_created.append(name not in self.created)
        self.created.append(name)
        if self.fail_after_create:
            raise OSError("the API went away")
        return {"cluster": cluster_id, "rules": [name]}

    async def restore(self, cluster_id, spec, resources, note=None):
        self.restored.append({k: list(v) for k, v in resources.items()})
        return {"cluster": cluster_id, "rules": list(resources.get("firewall", ()))}

    async def teardown(self, context):
        for name in context["rules"]:
            self.created.remove(name)
        await super().teardown(context)


async def test_shared_resources_are_in_the_ledger_before_they_exist_and_until_torn_down(tmp_path):
    from skyward.core.ledger import Ledger

    ledger = Ledger(tmp_path / "ledger.json")
    provider = Noting()
    bus, registry, log = make(provider, ledger=ledger)
    ready = await up(bus)
    cluster_id = ready.cluster.id
    assert provider.noted_before_created == [True]
    record = ledger.cluster(cluster_id)
    assert record is not None and record.resources == {"firewall": [f"skyward-{cluster_id}"]}
    assert record.provider == "container" and record.spec["nodes"] == 2
    assert not ledger.notices()  # cluster records are not "entries this version cannot read"
    await bus.request(lambda r: ShutdownRequested(cluster_id, r), timeout=5)
    assert provider.created == [] and ledger.cluster(cluster_id) is None
    assert ledger.entries() == []


async def test_a_prepare_that_fails_midway_is_torn_down_from_what_it_noted(tmp_path):
    from skyward.core.ledger import Ledger

    ledger = Ledger(tmp_path / "ledger.json")
    provider = Noting(fail_after_create=True)
    bus, registry, log = make(provider, ledger=ledger)
    answer = await up(bus)
    assert isinstance(answer, Error)
    assert provider.created == [], "the rule the failed prepare made is deleted"
    assert provider.restored and list(provider.restored[0]) == ["firewall"]
    assert ledger.clusters() == []


async def test_a_failed_teardown_keeps_the_cluster_record(tmp_path):
    from skyward.core.ledger import Ledger

    class Stuck(Noting):
        async def teardown(self, context):
            raise OSError("the firewall is still in use")

    ledger = Ledger(tmp_path / "ledger.json")
    bus, registry, log = make(Stuck(), ledger=ledger)
    ready = await up(bus)
    await bus.request(lambda r: ShutdownRequested(ready.cluster.id, r), timeout=5)
    record = ledger.cluster(ready.cluster.id)
    assert record is not None and record.resources["firewall"] == [f"skyward-{ready.cluster.id}"]
