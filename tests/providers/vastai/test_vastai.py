"""The vastai provider against the local Vast.ai simulator: offers, rent with a pinned
host key (onstart script), the account SSH key, capacity fallback (``no_such_ask``),
429/500 retries, preemption (outbid), confirmed destroy, and a real kernel."""

from __future__ import annotations

import time

import httpx
import pytest
from skyward.core.provider import InstanceState
from skyward.errors import ProvisionError
from skyward.model import ClusterSpec
from skyward.providers import get_provider
from skyward.providers.vastai import VastProvider

from .. import cloudtests as ct
from .simulator import (
    API_KEY,
    HOURS_PER_MONTH,
    STORAGE_COST,
    VastInstance,
    VastSimulator,
    api_base,
)

SPEC = ClusterSpec(provider="vastai", nodes=1, accelerator="A100", accelerator_count=2)


@pytest.fixture
def sim():
    with VastSimulator() as simulator:
        yield simulator


@pytest.fixture
def provider(sim):
    return VastProvider(api_key=API_KEY, endpoint=api_base(sim), backoff=0.05)


def test_missing_credentials_name_the_variable(monkeypatch, tmp_path):
    monkeypatch.delenv("VAST_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    with pytest.raises(ProvisionError, match=r"^vastai: no credentials: set VAST_API_KEY"):
        get_provider("vastai")


def test_the_cli_key_file_is_a_credential(monkeypatch, tmp_path):
    monkeypatch.delenv("VAST_API_KEY", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    (tmp_path / "vastai").mkdir()
    (tmp_path / "vastai" / "vast_api_key").write_text("from-file\n")
    assert get_provider("vastai")._key == "from-file"


async def test_rejected_credentials_fail_before_any_launch(sim, tmp_path):
    provider = VastProvider(api_key="wrong", endpoint=api_base(sim))
    with pytest.raises(ProvisionError, match="rejected the credentials.*VAST_API_KEY"):
        await provider.prepare("sky-v1", SPEC, ct.make_keys(tmp_path))
    assert sim.instances == {} and sim.ssh_keys == {}


async def test_offers_match_type_and_count_cheapest_first(provider):
    offers = await provider.offers(SPEC)
    assert [o.accelerator for o in offers] == ["A100 PCIE", "A100 SXM4"]
    assert all(o.accelerator_count == 2 and o.vcpus == 16 for o in offers)
    assert offers[0].spot_price_per_hour == pytest.approx(
        1.0 + 40 * STORAGE_COST / HOURS_PER_MONTH, abs=1e-4
    )
    assert offers[0].region == "Quebec, CA"
    anywhere = await provider.offers(ClusterSpec("vastai", accelerator_count=1, spot="never"))
    assert anywhere[0].accelerator == "RTX 4090"
    assert await provider.offers(ClusterSpec("vastai", accelerator="A100", region="IS")) == []


async def test_instance_lifecycle_with_pinned_host_key(sim, provider, tmp_path):
    keys = ct.make_keys(tmp_path)
    context = await provider.prepare("sky-v2", SPEC, keys)
    assert list(sim.ssh_keys.values()) == [keys.public_key]
    request, host_key = ct.launch_request("sky-v2", 0, SPEC, keys)
    iid = await provider.launch(context, request)
    assert sim.instances[int(iid)].label == "sky-v2-n0" and sim.instances[int(iid)].is_bid
    instance = await provider.wait_running(context, iid, 30)
    assert instance.spot and instance.ssh_port > 0
    assert await ct.ssh_echo(instance, keys, host_key) == "pinned-ok"
    assert (await provider.status(context, iid)).state is InstanceState.RUNNING
    await provider.destroy(context, iid)
    await provider.teardown(context)
    assert sim.instances == {} and sim.ssh_keys == {} and sim.backing_count() == 0


async def test_capacity_error_falls_back_to_the_next_offer_and_says_so(
    sim, provider, tmp_path, caplog
):
    context, iid = await ct.launch_after_refusal(provider, sim, "sky-v3", SPEC, tmp_path, caplog)
    assert sim.count("PUT", r"/asks/") == 2
    assert "vastai: no capacity for A100 PCIE x2" in caplog.text and "trying" in caplog.text
    await provider.destroy(context, iid)
    await provider.teardown(context)


async def test_429_is_retried_after_retry_after(sim, provider):
    sim.fail_with("429", times=1)
    start = time.monotonic()
    assert await provider.offers(SPEC)
    assert time.monotonic() - start >= 1.0
    assert sim.count("POST", "/bundles/") == 3  # 429, then on-demand and bid searches


async def test_500_once_is_retried_and_a_lost_rent_is_not_doubled(sim, provider, tmp_path):
    keys = ct.make_keys(tmp_path)
    context = await provider.prepare("sky-v4", SPEC, keys)
    sim.fail_with("lost", times=1, match=lambda r: r.method == "PUT")
    request, _ = ct.launch_request("sky-v4", 0, SPEC, keys)
    iid = await provider.launch(context, request)
    assert list(sim.instances) == [int(iid)]
    await provider.destroy(context, iid)
    await provider.teardown(context)


async def test_preemption_is_reported_with_vasts_reason(sim, provider, tmp_path):
    report = await ct.preemption_report(provider, sim, "sky-v5", SPEC, tmp_path)
    assert report.state is InstanceState.PREEMPTED
    assert report.reason == (
        "vastai: interruptible instance stopped: "
        "Instance stopped: outbid by a higher bid (interruptible)"
    )
    assert sim.instances == {} and sim.ssh_keys == {}


@pytest.mark.slow
def test_kernel_up_run_down_through_the_simulator():
    with VastSimulator() as sim:
        env = {"SKYWARD_VASTAI_ENDPOINT": api_base(sim), "VAST_API_KEY": API_KEY}
        ct.check_two_nodes(env, "vastai")
        assert sim.instances == {} and sim.ssh_keys == {} and sim.backing_count() == 0


@pytest.mark.slow
def test_example_notebook_runs_against_the_simulator(monkeypatch):
    with VastSimulator() as sim:
        for key, value in {
            "SKYWARD_VASTAI_ENDPOINT": api_base(sim),
            "VAST_API_KEY": API_KEY,
        }.items():
            monkeypatch.setenv(key, value)
        ct.check_notebook(ct.run_notebook("vastai"), "vastai")
        assert sim.backing_count() == 0


async def test_offers_leave_out_unverified_and_external_hosts_and_price_the_disk(provider):
    offers = await provider.offers(SPEC)
    assert {o.region for o in offers} == {"Quebec, CA", "Texas, US"}  # not Nowhere/Elsewhere
    disk = 40 * STORAGE_COST / HOURS_PER_MONTH  # the 40 GB skyward rents, $/h
    cheapest = offers[0]
    assert cheapest.price_per_hour == pytest.approx(2 * 0.95 + disk, abs=1e-4)
    assert cheapest.spot_price_per_hour == pytest.approx(2 * 0.50 + disk, abs=1e-4)
    assert cheapest.memory_gb == 128  # cpu_ram 128000 MB


async def test_status_reads_the_instance_as_its_owner(sim, provider, tmp_path):
    keys = ct.make_keys(tmp_path)
    context = await provider.prepare("sky-v6", SPEC, keys)
    iid = await provider.launch(context, ct.launch_request("sky-v6", 0, SPEC, keys)[0])
    assert (await provider.status(context, iid)).state in (
        InstanceState.PENDING, InstanceState.RUNNING,
    )  # fmt: skip
    reads = [r for r in sim.requests if r.method == "GET" and r.path.endswith(f"/{iid}/")]
    assert reads and all(r.query == {"owner": "me"} for r in reads)
    await provider.destroy(context, iid)
    await provider.teardown(context)


def _vast(sim, method, path, **kw):
    answer = httpx.request(
        method, f"{sim.url}{path}", headers={"Authorization": f"Bearer {API_KEY}"}, timeout=10, **kw
    )
    return answer.status_code, answer.json()


def test_unknown_search_fields_body_fields_and_parameters_are_refused(sim):
    status, body = _vast(sim, "POST", "/api/v0/bundles/", json={"num_gpu": {"eq": 2}})
    assert (status, body["error"]) == (400, "invalid_args") and "num_gpu" in body["msg"]
    status, body = _vast(sim, "POST", "/api/v0/bundles/", json={"num_gpus": 2})
    assert status == 400
    status, body = _vast(sim, "PUT", "/api/v0/asks/5001/", json={"image": "x", "disk_gb": 40})
    assert (status, body["success"]) == (400, False) and "disk_gb" in body["msg"]
    status, body = _vast(sim, "GET", "/api/v0/instances/1/", params={"owner": "me", "ownr": "me"})
    assert status == 400 and "ownr" in body["msg"]
    assert sim.instances == {}


def test_v1_instances_read_numbers_sent_as_strings(sim):
    sim.instances[9] = VastInstance(9, "x", sim.offers[0], False, {"image": "i"}, 1.0)
    params = {"limit": "25", "select_filters": '{"id": {"eq": "9"}}'}
    status, body = _vast(sim, "GET", "/api/v1/instances/", params=params)
    assert status == 200 and [row["id"] for row in body["instances"]] == [9]
    assert body["instances"][0]["extra_env"] == [] and body["instances"][0]["start_date"] == 1.0
    status, body = _vast(sim, "GET", "/api/v1/instances/", params={"limit": "many"})
    assert status == 400
    sim.instances.clear()
