"""The gcp provider against a local Compute Engine (REST shapes, real nodes behind VMs)."""

from __future__ import annotations

import logging
import time

import pytest
from google.api_core.exceptions import Conflict
from skyward.core.provider import InstanceState
from skyward.errors import ProvisionError
from skyward.model import ClusterSpec
from skyward.providers.gcp import GcpProvider

from ..aws.e2e import check_example_notebook, check_two_node_life
from ..cloudtests import prepare_one, tear_down
from .simulator import GcpSimulator

PROJECT = {"GOOGLE_CLOUD_PROJECT": "sim-project"}


@pytest.fixture(scope="module")
def sim():
    simulator = GcpSimulator()
    yield simulator
    simulator.close()


@pytest.fixture
def gcp(sim, monkeypatch):
    """The provider pointed at the simulator; checks that nothing is left behind."""
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "sim-project")
    monkeypatch.setenv("SKYWARD_GCP_ENDPOINT", sim.endpoint)
    sim.capacity.clear()
    sim.reject_credentials = False
    sim.default_network()
    yield GcpProvider()
    assert sim.live_instances() == []
    assert sim.cluster_resources() == []
    assert sim.backing.alive() == []


def test_missing_credentials_name_what_to_set(monkeypatch, tmp_path):
    monkeypatch.delenv("SKYWARD_GCP_ENDPOINT", raising=False)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    with pytest.raises(ProvisionError) as info:
        GcpProvider()
    message = str(info.value)
    assert "\n" not in message and "GOOGLE_APPLICATION_CREDENTIALS" in message


def test_missing_project_names_what_to_set(monkeypatch, sim):
    monkeypatch.setenv("SKYWARD_GCP_ENDPOINT", sim.endpoint)
    for key in ("GOOGLE_CLOUD_PROJECT", "CLOUDSDK_CORE_PROJECT"):
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(ProvisionError, match="set GOOGLE_CLOUD_PROJECT"):
        GcpProvider()


async def test_rejected_credentials_are_one_line_before_any_launch(gcp, sim):
    sim.reject_credentials = True
    with pytest.raises(ProvisionError, match="rejected the credentials.*APPLICATION_CREDENTIALS"):
        await gcp.prepare("sky-gcp0001", ClusterSpec("gcp"), None)
    assert not any(path.endswith("/instances") for m, path, _ in sim.calls if m == "POST")


async def test_offers_by_type_count_zone_and_price(gcp):
    offers = await gcp.offers(ClusterSpec("gcp", accelerator="A100", accelerator_count=2))
    assert offers[0].instance_type == "a2-highgpu-2g" and offers[0].region == "us-central1-a"
    assert {o.region for o in offers} == {"us-central1-a", "us-central1-b", "us-central1-c"}
    assert all(o.accelerator_count >= 2 and o.accelerator.startswith("A100") for o in offers)
    cheapest = await gcp.offers(
        ClusterSpec("gcp", accelerator_count=4, spot="never", region="us-central1-b")
    )
    assert cheapest[0].instance_type == "n1-standard-8+4xnvidia-tesla-t4"
    assert cheapest[0].accelerator == "T4"
    spec = ClusterSpec(
        "gcp", accelerator="A100", accelerator_count=1, spot="always", max_price=2.0,
        region="us-central1-a",
    )  # fmt: skip
    capped = await gcp.offers(spec)
    assert [o.instance_type for o in capped] == ["a2-highgpu-1g"]


async def test_firewall_opens_ssh_to_the_caller_and_vm_carries_keys(gcp, sim):
    context, request = await prepare_one(gcp, ClusterSpec("gcp", spot="never"), "sky-gcp0002")
    rule = sim.firewalls["skyward-sky-gcp0002"]
    assert rule["sourceRanges"] == ["127.0.0.1/32"]
    assert rule["allowed"] == [{"IPProtocol": "tcp", "ports": ["22"]}]
    assert rule["targetTags"] == ["skyward-sky-gcp0002"]
    iid = await gcp.launch(context, request)
    instance = await gcp.wait_running(context, iid, 60)
    vm = sim.instances[tuple(iid.split("/"))]
    items = {i["key"]: i["value"] for i in vm["metadata"]["items"]}
    assert items["ssh-keys"] == f"skyward:{request.keys.public_key}"
    assert items["block-project-ssh-keys"].lower() == "true"  # only the cluster key logs in
    assert request.host_public_key in items["startup-script"]
    assert vm["labels"] == {"skyward-cluster": "sky-gcp0002", "skyward-node": "0"}
    assert vm["tags"]["items"] == ["skyward-sky-gcp0002"]
    assert instance.ip.startswith("127.0.") and instance.ssh_port == 22
    await tear_down(gcp, context, iid)


async def test_the_cluster_vms_admit_each_other_and_no_one_else(gcp, sim):
    context, _ = await prepare_one(gcp, ClusterSpec("gcp", spot="never"), "sky-gcp0006")
    assert sorted(sim.cluster_resources()) == [
        "skyward-sky-gcp0006",
        "skyward-sky-gcp0006-internal",
    ]
    rule = sim.firewalls["skyward-sky-gcp0006-internal"]
    assert rule["direction"] == "INGRESS" and rule["network"].endswith("/networks/default")
    assert rule["sourceTags"] == rule["targetTags"] == ["skyward-sky-gcp0006"]
    assert "sourceRanges" not in rule  # from the cluster's VMs only, never an address range
    assert {a["IPProtocol"] for a in rule["allowed"]} == {"tcp", "udp", "icmp"}
    assert all("ports" not in a for a in rule["allowed"])  # every port
    await gcp.teardown(context)
    assert "skyward-sky-gcp0006-internal" not in sim.firewalls


async def test_up_warns_once_when_the_network_admits_ssh_from_anywhere(gcp, sim, caplog):
    spec = ClusterSpec("gcp", spot="never")
    with caplog.at_level(logging.WARNING, logger="skyward"):
        context, request = await prepare_one(gcp, spec, "sky-gcp0008")
        iid = await gcp.launch(context, request)
        await gcp.wait_running(context, iid, 60)
    [warning] = [r.getMessage() for r in caplog.records if "from anywhere" in r.getMessage()]
    assert "(default-allow-ssh)" in warning  # not RDP, ICMP nor the internal rule
    await tear_down(gcp, context, iid)
    sim.default_network(open_ssh=False)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="skyward"):
        await gcp.teardown(await gcp.prepare("sky-gcp0009", spec, None))
    assert not [r for r in caplog.records if "from anywhere" in r.getMessage()]


@pytest.mark.parametrize(
    ("rule", "warned"),
    [
        ({"allowed": [{"IPProtocol": "tcp", "ports": ["20-25"]}]}, True),
        ({"allowed": [{"IPProtocol": "all"}]}, True),
        ({"allowed": [{"IPProtocol": "tcp"}], "sourceRanges": ["::/0"]}, True),
        ({"allowed": [{"IPProtocol": "tcp"}]}, True),  # no source at all: every address
        ({"allowed": [{"IPProtocol": "tcp", "ports": ["22"]}], "targetTags": ["web"]}, False),
        ({"allowed": [{"IPProtocol": "tcp", "ports": ["22"]}], "disabled": True}, False),
        ({"allowed": [{"IPProtocol": "udp", "ports": ["22"]}]}, False),
        ({"allowed": [{"IPProtocol": "tcp", "ports": ["22"]}], "sourceTags": ["bastion"]}, False),
    ],
)
async def test_which_rules_count_as_ssh_from_anywhere(gcp, sim, caplog, rule, warned):
    sim.default_network(open_ssh=False)
    base = f"{sim.endpoint}/compute/v1/projects/sim-project"
    sim.firewalls["user-rule"] = sim._firewall(base, {"name": "user-rule", **rule})
    try:
        with caplog.at_level(logging.WARNING, logger="skyward"):
            await gcp.teardown(await gcp.prepare("sky-gcp0010", ClusterSpec("gcp"), None))
    finally:
        del sim.firewalls["user-rule"]
    said = [r.getMessage() for r in caplog.records if "from anywhere" in r.getMessage()]
    assert bool(said) is warned, said


async def test_a_failed_prepare_deletes_only_the_rules_it_made(gcp, sim):
    spec = ClusterSpec("gcp", spot="never")
    live, _ = await prepare_one(gcp, spec, "sky-gcp0011")  # a live cluster's rules
    before = {name: dict(rule) for name, rule in sim.firewalls.items()}
    with pytest.raises(Conflict):
        await gcp.prepare("sky-gcp0011", spec, None)  # the same names again: 409
    assert sim.firewalls == before  # the live cluster keeps its SSH rule
    await gcp.teardown(live)


async def test_stockout_falls_back_to_the_next_zone_and_says_so(gcp, sim, caplog):
    sim.capacity.add("a2-highgpu-2g@us-central1-a")
    spec = ClusterSpec("gcp", accelerator="A100", accelerator_count=2, spot="never")
    context, request = await prepare_one(gcp, spec, "sky-gcp0003")
    with caplog.at_level(logging.WARNING, logger="skyward"):
        iid = await gcp.launch(context, request)
    assert iid.startswith("us-central1-b/")
    assert "ZONE_RESOURCE_POOL_EXHAUSTED" in caplog.text
    assert "trying a2-highgpu-2g in us-central1-b" in caplog.text
    await gcp.wait_running(context, iid, 60)
    await tear_down(gcp, context, iid)


async def test_429_is_retried_after_retry_after_and_500_once(gcp, sim):
    context, request = await prepare_one(gcp, ClusterSpec("gcp", spot="never"), "sky-gcp0004")
    sim.fail("POST", r"/instances$", 429, "rateLimitExceeded", retry_after=1)
    sim.fail("GET", r"/instances/[^/]+$", 500, "backendError")
    start = time.monotonic()
    iid = await gcp.launch(context, request)
    assert time.monotonic() - start >= 1.0
    await gcp.wait_running(context, iid, 60)
    inserts = [s for m, p, s in sim.calls if m == "POST" and p.endswith("/instances")]
    assert inserts[-2:] == [429, 200]
    assert any(s == 500 for m, p, s in sim.calls if m == "GET")
    await tear_down(gcp, context, iid)


async def test_preemption_is_reported_with_the_operation(gcp, sim):
    context, request = await prepare_one(gcp, ClusterSpec("gcp", spot="always"), "sky-gcp0005")
    iid = await gcp.launch(context, request)
    assert (await gcp.wait_running(context, iid, 60)).spot
    assert (await gcp.status(context, iid)).state is InstanceState.RUNNING
    sim.preempt(iid)
    report = await gcp.status(context, iid)
    assert report.state is InstanceState.PREEMPTED
    assert report.reason.startswith("compute.instances.preempted")
    await tear_down(gcp, context, iid)


@pytest.mark.slow
def test_kernel_up_run_down_on_gcp(sim):
    check_two_node_life({**PROJECT, "SKYWARD_GCP_ENDPOINT": sim.endpoint}, "gcp", sim)


@pytest.mark.slow
def test_notebook_runs_against_the_simulator(sim, pytestconfig):
    env = {**PROJECT, "SKYWARD_GCP_ENDPOINT": sim.endpoint}
    path = str(pytestconfig.rootpath / "notebooks/gcp.ipynb")
    check_example_notebook(path, env, "gcp", sim)
