"""The verda provider against the local Verda simulator: OAuth2 credentials, offers per
location, SSH key and startup script as cluster resources, a pinned host key on port 22,
capacity fallback, 429/500 retries, preemption (discontinued), and a real kernel."""

from __future__ import annotations

import time

import httpx
import pytest
from skyward.core.provider import InstanceState
from skyward.errors import ProvisionError
from skyward.model import ClusterSpec
from skyward.providers import get_provider
from skyward.providers.verda import VerdaProvider

from .. import cloudtests as ct
from .simulator import CLIENT_ID, CLIENT_SECRET, VerdaSimulator, api_base

SPEC = ClusterSpec(provider="verda", nodes=1, accelerator="A100", accelerator_count=2)


@pytest.fixture
def sim():
    with VerdaSimulator() as simulator:
        yield simulator


@pytest.fixture
def provider(sim):
    return VerdaProvider(CLIENT_ID, CLIENT_SECRET, endpoint=api_base(sim), backoff=0.05)


def test_missing_credentials_name_the_variables(monkeypatch):
    monkeypatch.setenv("VERDA_CLIENT_ID", "only-the-id")
    monkeypatch.delenv("VERDA_CLIENT_SECRET", raising=False)
    with pytest.raises(
        ProvisionError, match=r"^verda: no credentials: set VERDA_CLIENT_ID and VERDA_CLIENT_SECRET"
    ):
        get_provider("verda")


async def test_rejected_credentials_fail_before_any_launch(sim, tmp_path):
    provider = VerdaProvider(CLIENT_ID, "wrong", endpoint=api_base(sim))
    with pytest.raises(ProvisionError, match="verda rejected the credentials.*VERDA_CLIENT_ID"):
        await provider.prepare("sky-d1", SPEC, ct.make_keys(tmp_path))
    assert sim.vms == {} and sim.ssh_keys == {} and sim.scripts == {}


async def test_offers_per_location_cheapest_first(provider):
    offers = await provider.offers(SPEC)
    assert [(o.instance_type, o.region) for o in offers] == [
        ("2A100.44V", "FIN-03"), ("2A100.44V", "FIN-01"), ("2A100.44V", "ICE-01"),
    ]  # fmt: skip
    assert offers[0].accelerator == "A100 SXM4 80GB" and offers[0].vcpus == 44
    assert offers[0].price_per_hour == 2.58 and offers[0].spot_price_per_hour == 1.04
    iceland = await provider.offers(ClusterSpec("verda", accelerator_count=2, region="ICE-01"))
    assert [o.instance_type for o in iceland] == ["2A100.44V"]
    spot_any = await provider.offers(ClusterSpec("verda", accelerator_count=1, spot="always"))
    assert spot_any[0].instance_type == "1RTX6000ADA.10V"


async def test_vm_lifecycle_with_pinned_host_key_on_port_22(sim, provider, tmp_path):
    keys = ct.make_keys(tmp_path)
    context = await provider.prepare("sky-d2", SPEC, keys)
    assert [k["name"] for k in sim.ssh_keys.values()] == ["skyward-sky-d2"]
    request, host_key = ct.launch_request("sky-d2", 0, SPEC, keys)
    iid = await provider.launch(context, request)
    assert sim.vms[iid].hostname == "sky-d2-n0" and sim.vms[iid].is_spot
    assert [s["name"] for s in sim.scripts.values()] == ["skyward-sky-d2-n0"]
    instance = await provider.wait_running(context, iid, 30)
    assert instance.ssh_port == 22 and instance.spot and instance.region == "FIN-03"
    assert await ct.ssh_echo(instance, keys, host_key) == "pinned-ok"
    assert (await provider.status(context, iid)).state is InstanceState.RUNNING
    await provider.destroy(context, iid)
    await provider.teardown(context)
    assert sim.vms == {} and sim.ssh_keys == {} and sim.scripts == {}
    assert sim.backing_count() == 0


async def test_capacity_error_falls_back_to_the_next_offer_and_says_so(
    sim, provider, tmp_path, caplog
):
    context, iid = await ct.launch_after_refusal(provider, sim, "sky-d3", SPEC, tmp_path, caplog)
    assert sim.count("POST", r"/instances$") == 2
    assert "verda: no capacity for 2A100.44V (spot in FIN-03" in caplog.text
    assert "trying 2A100.44V (on-demand in FIN-01" in caplog.text
    assert not sim.vms[iid].is_spot
    await provider.destroy(context, iid)
    await provider.teardown(context)
    assert sim.vms == {} and sim.scripts == {}


async def test_429_is_retried_after_retry_after(sim, provider):
    sim.fail_with("429", times=1, match=lambda r: r.path.endswith("/instance-types"))
    start = time.monotonic()
    assert await provider.offers(SPEC)
    assert time.monotonic() - start >= 1.0
    assert sim.count("GET", "/instance-types") == 2


async def test_500_once_is_retried_and_a_lost_create_is_not_doubled(sim, provider, tmp_path):
    keys = ct.make_keys(tmp_path)
    context = await provider.prepare("sky-d4", SPEC, keys)
    sim.fail_with(
        "lost", times=1, match=lambda r: r.method == "POST" and r.path.endswith("/instances")
    )
    request, _ = ct.launch_request("sky-d4", 0, SPEC, keys)
    iid = await provider.launch(context, request)
    assert list(sim.vms) == [iid]
    await provider.destroy(context, iid)
    await provider.teardown(context)


async def test_preemption_is_reported_with_verdas_reason(sim, provider, tmp_path):
    report = await ct.preemption_report(provider, sim, "sky-d5", SPEC, tmp_path)
    assert report.state is InstanceState.PREEMPTED
    assert report.reason == "verda: spot instance discontinued (reclaimed)"
    assert sim.vms == {} and sim.ssh_keys == {} and sim.scripts == {}


@pytest.mark.slow
def test_kernel_up_run_down_through_the_simulator():
    with VerdaSimulator() as sim:
        env = {
            "SKYWARD_VERDA_ENDPOINT": api_base(sim),
            "VERDA_CLIENT_ID": CLIENT_ID,
            "VERDA_CLIENT_SECRET": CLIENT_SECRET,
        }
        ct.check_two_nodes(env, "verda")
        assert sim.vms == {} and sim.ssh_keys == {} and sim.scripts == {}
        assert sim.backing_count() == 0


@pytest.mark.slow
def test_example_notebook_runs_against_the_simulator(monkeypatch):
    with VerdaSimulator() as sim:
        for key, value in {
            "SKYWARD_VERDA_ENDPOINT": api_base(sim),
            "VERDA_CLIENT_ID": CLIENT_ID,
            "VERDA_CLIENT_SECRET": CLIENT_SECRET,
        }.items():
            monkeypatch.setenv(key, value)
        ct.check_notebook(ct.run_notebook("verda"), "verda")
        assert sim.backing_count() == 0


async def test_spot_offers_come_from_the_spot_availability(sim, provider):
    spot = await provider.offers(ClusterSpec("verda", accelerator_count=2, spot="always"))
    assert [(o.instance_type, o.region) for o in spot] == [("2A100.44V", "FIN-03")]
    asked = [r.query for r in sim.requests if r.path.endswith("/instance-availability")]
    assert {"isSpot": "true"} in asked


async def test_prices_are_asked_for_in_usd(sim, provider):
    offers = await provider.offers(SPEC)
    assert offers[0].price_per_hour == 2.58 and offers[0].spot_price_per_hour == 1.04
    asked = [r.query for r in sim.requests if r.path.endswith("/instance-types")]
    assert asked and all(q == {"currency": "usd"} for q in asked)


async def test_a_reclaimed_spot_vm_leaves_no_volume_billing(sim, provider, tmp_path):
    keys = ct.make_keys(tmp_path)
    spot = ClusterSpec("verda", accelerator="A100", accelerator_count=1, spot="always")
    context = await provider.prepare("sky-d6", spot, keys)
    iid = await provider.launch(context, ct.launch_request("sky-d6", 0, spot, keys)[0])
    assert sim.vms[iid].body["os_volume"]["on_spot_discontinue"] == "delete_permanently"
    await provider.wait_running(context, iid, 30)
    sim.preempt(iid)
    assert (await provider.status(context, iid)).state is InstanceState.PREEMPTED
    assert sim.billed_volumes() == []
    await provider.destroy(context, iid)
    await provider.teardown(context)


async def test_a_destroyed_vm_leaves_no_volume_billing(sim, provider, tmp_path):
    keys = ct.make_keys(tmp_path)
    context = await provider.prepare("sky-d7", SPEC, keys)
    iid = await provider.launch(context, ct.launch_request("sky-d7", 0, SPEC, keys)[0])
    await provider.wait_running(context, iid, 30)
    await provider.destroy(context, iid)
    await provider.teardown(context)
    assert sim.vms == {} and sim.billed_volumes() == [] and sim.volumes == {}


@pytest.mark.parametrize(
    ("status", "state"),
    [
        ("ordered", InstanceState.PENDING),
        ("provisioning", InstanceState.PENDING),
        ("restoring", InstanceState.PENDING),
        ("offline", InstanceState.STOPPED),
        ("starting_hibernation", InstanceState.STOPPED),
        ("hibernating", InstanceState.STOPPED),
        ("error", InstanceState.STOPPED),
        ("discontinued", InstanceState.TERMINATED),
        ("running", InstanceState.RUNNING),
    ],
)
async def test_every_instance_status_is_mapped(sim, provider, tmp_path, status, state):
    spec = ClusterSpec("verda", accelerator="A100", accelerator_count=2, spot="never")
    keys = ct.make_keys(tmp_path)
    context = await provider.prepare("sky-d8", spec, keys)
    iid = await provider.launch(context, ct.launch_request("sky-d8", 0, spec, keys)[0])
    await provider.wait_running(context, iid, 30)
    sim.vms[iid].status = status
    report = await provider.status(context, iid)
    assert report.state is state
    assert state is InstanceState.RUNNING or status in report.reason
    await provider.destroy(context, iid)
    await provider.teardown(context)


@pytest.mark.parametrize("reads_as", ["discontinued", "gone"])
async def test_a_reclaimed_spot_vm_is_preempted_however_it_reads(sim, provider, tmp_path, reads_as):
    keys = ct.make_keys(tmp_path)
    spot = ClusterSpec("verda", accelerator="A100", accelerator_count=1, spot="always")
    context = await provider.prepare("sky-d9", spot, keys)
    iid = await provider.launch(context, ct.launch_request("sky-d9", 0, spot, keys)[0])
    await provider.wait_running(context, iid, 30)
    sim.preempt(iid, reads_as=reads_as)
    report = await provider.status(context, iid)
    assert report.state is InstanceState.PREEMPTED and "reclaimed" in report.reason
    await provider.destroy(context, iid)
    await provider.teardown(context)


def _verda(sim, method, path, **kw):
    token = httpx.post(
        f"{sim.url}/v1/oauth2/token",
        json={"grant_type": "client_credentials", "client_id": CLIENT_ID,
              "client_secret": CLIENT_SECRET},
        timeout=10,
    ).json()["access_token"]  # fmt: skip
    answer = httpx.request(
        method, f"{sim.url}/v1{path}", headers={"Authorization": f"Bearer {token}"}, timeout=10,
        **kw,
    )  # fmt: skip
    return answer.status_code, answer.json()


def test_unknown_body_fields_and_parameters_are_refused(sim):
    status, body = _verda(sim, "GET", "/instance-availability", params={"is_spot": "true"})
    assert (status, body["code"]) == (400, "invalid_request") and "is_spot" in body["message"]
    create = {"instance_type": "1A100.22V", "image": "ubuntu-22.04", "hostname": "h",
              "description": "d", "location_code": "FIN-01", "isSpot": True}  # fmt: skip
    status, body = _verda(sim, "POST", "/instances", json=create)
    assert status == 400 and "isSpot" in body["message"] and sim.vms == {}
    create.pop("isSpot")
    create["os_volume"] = {"name": "os", "size": 50, "on_spot_discontinued": "delete_permanently"}
    status, body = _verda(sim, "POST", "/instances", json=create)
    assert status == 400 and "on_spot_discontinued" in body["message"] and sim.vms == {}
