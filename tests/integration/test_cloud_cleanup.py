"""Nothing left, on every cloud: a cluster whose kernel was SIGKILLed is destroyed at the
next ``%load_ext skyward`` (also when the cloud has no capacity left then), a ``--keep``
cluster is taken over by ``%skyward attach`` with its rules and keys untouched, and a
clean kernel shutdown destroys what the kernel launched. Each through real kernels, on
each provider's simulator, with real SSH nodes behind the simulated instances."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from tests.providers.clouds import CLOUDS, Cloud, open_cloud

from .kernel import Kernel, loaded
from .test_faults import ledger, wait_until

pytestmark = pytest.mark.slow

UP_TIMEOUT = 240


@pytest.fixture(scope="module", params=CLOUDS)
def cloud(request):
    opened = open_cloud(request.param)
    yield opened
    opened.close()


@pytest.fixture(autouse=True)
def _restocked(cloud):
    yield
    cloud.sell_out(False)


def recorded(cluster_id: str) -> list[str]:
    """The keys the ledger file still holds for the cluster (instances and its record)."""
    path = ledger().path
    stored = json.loads(path.read_text()) if path.exists() else {}
    return [key for key in stored if key.startswith(f"{cluster_id}/")]


def up(cloud: Cloud, extra: str = "") -> tuple[Kernel, str]:
    """A kernel with a one-node cluster up on ``cloud``; the cluster's id."""
    k = Kernel(env=cloud.kernel_env())
    try:
        assert k.execute("%load_ext skyward").ok
        line = f"%skyward up --provider {cloud.name} {cloud.up_args} {extra}"
        result = k.execute(line, timeout=UP_TIMEOUT)
        assert result.ok, result.text()
        shown = k.execute(
            "from skyward.jupyter.extension import session\nprint(session().current.id)"
        )
        cluster_id = shown.text().strip().splitlines()[-1]
    except BaseException:
        k.shutdown()
        raise
    return k, cluster_id


def assert_gone(cloud: Cloud, cluster_id: str, timeout: float = 90) -> None:
    """Nothing of the cluster is billed or kept: instances, resources, ledger."""
    wait_until(lambda: not (cloud.live() or cloud.resources() or recorded(cluster_id)), timeout)
    assert cloud.live() == [], cloud.live()
    assert cloud.resources() == {}, cloud.resources()
    assert recorded(cluster_id) == []
    assert wait_until(lambda: cloud.backing() == 0, 30), "a real node is left running"


def assert_gone_at_the_next_load(cloud: Cloud, cluster_id: str) -> None:
    """A new kernel's ``%load_ext skyward`` destroys what a dead kernel left of the cluster."""
    with loaded(env=cloud.kernel_env()):
        assert_gone(cloud, cluster_id)


@pytest.mark.parametrize("capacity", ["available", "sold out"])
def test_sigkilled_kernels_cluster_is_destroyed_at_the_next_load(cloud, capacity):
    k, cluster_id = up(cloud)
    assert cloud.live(), "the cluster runs"
    os.kill(k.manager.provisioner.pid, signal.SIGKILL)
    k.client.stop_channels()
    assert wait_until(lambda: any(e.cluster_id == cluster_id for e in ledger().orphans()), 15)
    assert cloud.live(), "a SIGKILLed kernel destroys nothing"
    if capacity == "sold out":
        cloud.sell_out()
    assert_gone_at_the_next_load(cloud, cluster_id)


def test_attach_to_a_kept_cluster_keeps_it_reachable_and_its_rules(cloud):
    name = f"kept-{cloud.name}"
    k, cluster_id = up(cloud, f"--keep --name {name}")
    try:
        assert k.execute("%%skyward run --no-push\nmarker = 'from the first kernel'").ok
        before = cloud.resources()
        live = cloud.live()
    finally:
        k.shutdown()  # a normal exit: a kept cluster stays
    assert cloud.live() == live and cloud.resources() == before
    cloud.sell_out()  # taking over a running cluster needs no capacity
    with loaded(env=cloud.kernel_env()) as k2:
        attached = k2.execute(f"%skyward attach {name}", timeout=120)
        assert attached.ok and "attached cluster" in attached.text(), attached.text()
        result = k2.execute("%%skyward run --no-push\nmarker", timeout=60)
        assert result.ok and "'from the first kernel'" in result.text(), result.text()
        assert cloud.resources() == before, "attach changed the cluster's rules or keys"
        assert cloud.live() == live
        cloud.sell_out(False)
        down = k2.execute("%skyward down", timeout=180)
        assert down.ok, down.text()
        assert_gone(cloud, cluster_id)


def test_clean_kernel_shutdown_destroys_the_cluster(cloud):
    k, cluster_id = up(cloud)
    assert cloud.live() and recorded(cluster_id)
    # A server gives a kernel 5 s to exit; under the test's load it may take longer.
    k.manager.shutdown_wait_time = 60
    k.shutdown()
    assert_gone(cloud, cluster_id, timeout=30)


KILLED_BEFORE_LAUNCH = """
import asyncio, os, signal, sys
from skyward.core.ledger import Ledger
from skyward.core.lifecycle import new_cluster_id, resource_note
from skyward.model import ClusterSpec
from skyward.providers import provider_for
from skyward.transport.keys import data_dir, make_cluster_keys

async def main():
    provider_name, gpus = sys.argv[1], int(sys.argv[2])
    spec = ClusterSpec(provider_name, accelerator="A100" if gpus else None, accelerator_count=gpus)
    provider = provider_for(provider_name, spec)
    ledger, cluster_id = Ledger(data_dir() / "ledger.json"), new_cluster_id()
    keys = await make_cluster_keys(cluster_id)
    ledger.begin_cluster(provider_name, cluster_id, spec, False, keys.private_key_path)
    await provider.prepare(cluster_id, spec, keys, resource_note(ledger, cluster_id))
    print(cluster_id, flush=True)

asyncio.run(main())
os.kill(os.getpid(), signal.SIGKILL)  # the kernel dies before its first launch
"""


def test_resources_of_a_kernel_killed_before_its_first_launch_go_at_the_next_load(cloud):
    gpus = "1" if "--gpus" in cloud.up_args else "0"
    made = subprocess.run(
        [sys.executable, "-c", KILLED_BEFORE_LAUNCH, cloud.name, gpus],
        env=cloud.kernel_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert made.returncode == -signal.SIGKILL, made.stderr
    cluster_id = made.stdout.split()[-1]
    assert f"{cluster_id}/cluster" in recorded(cluster_id) and not cloud.live()
    if cloud.name != "runpod":  # RunPod has no cluster-level resources
        assert cloud.resources(), "prepare made the cluster's shared resources"
    cloud.sell_out()
    assert_gone_at_the_next_load(cloud, cluster_id)
