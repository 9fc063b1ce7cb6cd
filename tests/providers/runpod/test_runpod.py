"""The runpod provider against the local RunPod simulator: offers, launch with a pinned
host key, capacity fallback, 429/500 retries, preemption, confirmed destroy, and a real
kernel through up / run / down."""

from __future__ import annotations

import time

import asyncssh
import pytest
from skyward.core.provider import InstanceState
from skyward.errors import CapacityError, ProvisionError
from skyward.model import ClusterSpec
from skyward.providers import get_provider
from skyward.providers.runpod import RunPodProvider

from .. import cloudtests as ct
from .simulator import API_KEY, RunPodSimulator

SPEC = ClusterSpec(provider="runpod", nodes=1, accelerator="A100", accelerator_count=2)


@pytest.fixture
def sim(request):
    with RunPodSimulator(**getattr(request, "param", {})) as simulator:
        yield simulator


@pytest.fixture
def provider(sim):
    return RunPodProvider(api_key=API_KEY, endpoint=sim.url, backoff=0.05)


def test_missing_credentials_name_the_variable(monkeypatch):
    monkeypatch.delenv("RUNPOD_API_KEY", raising=False)
    with pytest.raises(ProvisionError, match=r"^runpod: no credentials: set RUNPOD_API_KEY"):
        get_provider("runpod")


async def test_rejected_credentials_fail_before_any_launch(sim, tmp_path):
    provider = RunPodProvider(api_key="wrong", endpoint=sim.url)
    with pytest.raises(ProvisionError, match="rejected the credentials.*RUNPOD_API_KEY"):
        await provider.prepare("sky-t1", SPEC, ct.make_keys(tmp_path))
    assert sim.count("POST", "/graphql") == 1 and sim.pods == {}


async def test_offers_match_type_and_count_cheapest_first(provider):
    offers = await provider.offers(SPEC)
    assert offers and all("A100" in (o.accelerator or "") for o in offers)
    assert all(o.accelerator_count == 2 for o in offers)
    prices = [min(o.price_per_hour, o.spot_price_per_hour or 1e9) for o in offers]
    assert prices == sorted(prices)
    assert offers[0].instance_type == "NVIDIA A100 80GB PCIe x2 (community)"
    assert offers[0].price_per_hour == pytest.approx(2.38)
    assert offers[0].spot_price_per_hour == pytest.approx(1.2)
    on_demand = await provider.offers(ClusterSpec("runpod", accelerator_count=1, spot="never"))
    assert on_demand[0].accelerator == "RTX 4090"  # any type, cheapest
    capped = await provider.offers(
        ClusterSpec("runpod", accelerator="H100", accelerator_count=1, max_price=1.0)
    )
    assert capped == []


async def test_pod_lifecycle_with_pinned_host_key(sim, provider, tmp_path):
    keys = ct.make_keys(tmp_path)
    context = await provider.prepare("sky-t2", SPEC, keys)
    request, host_key = ct.launch_request("sky-t2", 0, SPEC, keys)
    pod_id = await provider.launch(context, request)
    deployed = sim.pods[pod_id]
    assert deployed.name == "sky-t2-n0" and deployed.interruptible  # spot was cheapest
    assert deployed.env["PUBLIC_KEY"] == keys.public_key
    instance = await provider.wait_running(context, pod_id, 30)
    assert instance.spot and instance.ssh_port > 0 and instance.offer is not None
    assert await ct.ssh_echo(instance, keys, host_key) == "pinned-ok"
    other = asyncssh.generate_private_key("ssh-ed25519").convert_to_public()
    with pytest.raises(asyncssh.HostKeyNotVerifiable):
        await ct.ssh_echo(instance, keys, other)
    assert (await provider.status(context, pod_id)).state is InstanceState.RUNNING
    await provider.destroy(context, pod_id)
    await provider.teardown(context)
    assert sim.live_pods() == [] and sim.backing_count() == 0
    assert (await provider.status(context, pod_id)).state is InstanceState.TERMINATED


async def test_capacity_error_falls_back_to_the_next_offer_and_says_so(
    sim, provider, tmp_path, caplog
):
    context, pod_id = await ct.launch_after_refusal(provider, sim, "sky-t3", SPEC, tmp_path, caplog)
    assert sim.count("POST", "/graphql") >= 3  # offers, refused deploy, deploy
    assert "no capacity for NVIDIA A100 80GB PCIe x2 (community) (spot" in caplog.text
    assert "trying" in caplog.text
    assert context.instances[pod_id] == context.candidates[1]
    await provider.destroy(context, pod_id)


async def test_capacity_everywhere_is_one_clear_error(sim, provider, tmp_path):
    keys = ct.make_keys(tmp_path)
    context = await provider.prepare("sky-t4", SPEC, keys)
    sim.refuse_capacity(100)
    request, _ = ct.launch_request("sky-t4", 0, SPEC, keys)
    with pytest.raises(ProvisionError, match=r"runpod: no capacity in any of \d+ offer"):
        await provider.launch(context, request)
    assert sim.live_pods() == []


async def test_429_is_retried_after_retry_after(sim, provider):
    sim.fail_with("429", times=1)
    start = time.monotonic()
    assert await provider.offers(SPEC)
    assert time.monotonic() - start >= 1.0  # the simulator said Retry-After: 1
    assert sim.count("POST", "/graphql") == 2


async def test_500_once_is_retried_and_a_lost_deploy_is_not_doubled(sim, provider, tmp_path):
    keys = ct.make_keys(tmp_path)
    context = await provider.prepare("sky-t5", SPEC, keys)
    sim.fail_with("lost", times=1, match=lambda r: "podRentInterruptable" in str(r.body))
    request, _ = ct.launch_request("sky-t5", 0, SPEC, keys)
    pod_id = await provider.launch(context, request)
    assert len(sim.live_pods()) == 1 and sim.live_pods()[0].id == pod_id
    await provider.destroy(context, pod_id)


async def test_preemption_is_reported_with_runpods_reason(sim, provider, tmp_path):
    report = await ct.preemption_report(provider, sim, "sky-t6", SPEC, tmp_path)
    assert report.state is InstanceState.PREEMPTED
    assert report.reason == "runpod: interruptible pod exited (outbid or reclaimed)"
    assert sim.live_pods() == []


@pytest.mark.parametrize(
    ("status", "spot", "state"),
    [
        ("CREATED", True, InstanceState.PENDING),
        ("RESTARTING", True, InstanceState.PENDING),
        ("EXITED", True, InstanceState.PREEMPTED),
        ("EXITED", False, InstanceState.STOPPED),
        ("PAUSED", False, InstanceState.STOPPED),
        ("DEAD", False, InstanceState.STOPPED),
        ("DEAD", True, InstanceState.STOPPED),
        ("TERMINATED", False, InstanceState.TERMINATED),
    ],
)
async def test_every_pod_status_is_mapped(sim, provider, tmp_path, status, spot, state):
    spec = ClusterSpec("runpod", accelerator="A100", accelerator_count=1,
                       spot="always" if spot else "never")  # fmt: skip
    keys = ct.make_keys(tmp_path)
    context = await provider.prepare("sky-t8", spec, keys)
    pod_id = await provider.launch(context, ct.launch_request("sky-t8", 0, spec, keys)[0])
    sim.set_status(pod_id, status)
    report = await provider.status(context, pod_id)
    assert report.state is state
    assert status.lower() in report.reason.lower() or state is not InstanceState.STOPPED
    await provider.teardown(context)


async def test_a_dead_pod_fails_its_start_at_once(sim, provider, tmp_path):
    keys = ct.make_keys(tmp_path)
    context = await provider.prepare("sky-t9", SPEC, keys)
    pod_id = await provider.launch(context, ct.launch_request("sky-t9", 0, SPEC, keys)[0])
    sim.set_status(pod_id, "DEAD")
    start = time.monotonic()
    with pytest.raises(ProvisionError, match=f"runpod: pod {pod_id} .*DEAD"):
        await provider.wait_running(context, pod_id, 60)
    assert time.monotonic() - start < 5
    await provider.teardown(context)


@pytest.mark.parametrize(
    "sim", [{"after_terminate": "null"}, {"after_terminate": "error"}], indirect=True
)
async def test_destroy_accepts_either_answer_for_a_terminated_pod(sim, provider, tmp_path):
    keys = ct.make_keys(tmp_path)
    context = await provider.prepare("sky-t10", SPEC, keys)
    pod_id = await provider.launch(context, ct.launch_request("sky-t10", 0, SPEC, keys)[0])
    await provider.destroy(context, pod_id)
    assert sim.live_pods() == []
    assert (await provider.status(context, pod_id)).state is InstanceState.TERMINATED
    await provider.destroy(context, pod_id)  # RunPod refuses, but the pod is gone: done
    await provider.teardown(context)


async def test_a_funds_refusal_is_not_a_capacity_error(sim, provider, tmp_path):
    keys = ct.make_keys(tmp_path)
    context = await provider.prepare("sky-t11", SPEC, keys)
    sim.refuse_funds(1)
    with pytest.raises(ProvisionError, match="Not enough funds") as raised:
        await provider.launch(context, ct.launch_request("sky-t11", 0, SPEC, keys)[0])
    assert not isinstance(raised.value, CapacityError)
    assert sim.live_pods() == []  # no fallback to the next offer


@pytest.mark.slow
def test_kernel_up_run_down_through_the_simulator():
    with RunPodSimulator() as sim:
        env = {"SKYWARD_RUNPOD_ENDPOINT": sim.url, "RUNPOD_API_KEY": API_KEY}
        ct.check_two_nodes(env, "runpod")
        assert sim.live_pods() == [] and sim.backing_count() == 0
        assert sim.count("POST", "/graphql") > 0


@pytest.mark.slow
def test_example_notebook_runs_against_the_simulator(monkeypatch):
    with RunPodSimulator() as sim:
        for key, value in {"SKYWARD_RUNPOD_ENDPOINT": sim.url, "RUNPOD_API_KEY": API_KEY}.items():
            monkeypatch.setenv(key, value)
        ct.check_notebook(ct.run_notebook("runpod"), "runpod")
        assert sim.backing_count() == 0
