"""The aws provider against a local EC2 (moto behind a middleware, real nodes behind VMs)."""

from __future__ import annotations

import logging
import time

import boto3
import pytest
from skyward.core.provider import InstanceState
from skyward.errors import ProvisionError
from skyward.model import ClusterSpec
from skyward.providers.aws import AwsProvider

from ..cloudtests import prepare_one, tear_down
from .e2e import check_example_notebook, check_two_node_life
from .simulator import AwsSimulator

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


@pytest.fixture(scope="module")
def sim():
    simulator = AwsSimulator()
    yield simulator
    simulator.close()


@pytest.fixture
def aws(sim, monkeypatch):
    """The provider pointed at the simulator, with test credentials; checks nothing leaks."""
    for key, value in {**CREDENTIALS, "SKYWARD_AWS_ENDPOINT": sim.endpoint}.items():
        monkeypatch.setenv(key, value)
    sim.capacity_types.clear()
    sim.reject_credentials = False
    yield AwsProvider()
    assert sim.live_instances() == []
    assert sim.cluster_resources() == []
    assert sim.backing.alive() == []


def test_missing_credentials_name_what_to_set(monkeypatch, tmp_path):
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.delenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", raising=False)
    with pytest.raises(ProvisionError) as info:
        AwsProvider()
    message = str(info.value)
    assert "\n" not in message and "AWS_ACCESS_KEY_ID" in message and "AWS_PROFILE" in message


async def test_rejected_credentials_are_one_line_before_any_launch(aws, sim):
    sim.reject_credentials = True
    with pytest.raises(ProvisionError, match="rejected the credentials.*AWS_ACCESS_KEY_ID"):
        await aws.prepare("sky-aws0002", ClusterSpec("aws"), None)
    assert not any(action == "RunInstances" for action, _ in sim.calls)


async def test_offers_any_type_cheapest_first_and_price_cap(aws):
    offers = await aws.offers(ClusterSpec("aws", accelerator_count=4, spot="never"))
    assert offers[0].instance_type == "g4dn.12xlarge"
    assert all(o.accelerator_count >= 4 for o in offers)
    prices = [o.price_per_hour for o in offers]
    assert prices == sorted(prices)
    capped = await aws.offers(ClusterSpec("aws", accelerator="A10G", accelerator_count=4,
                                          spot="never", max_price=6.0))  # fmt: skip
    assert [o.instance_type for o in capped] == ["g5.12xlarge"]
    a100 = await aws.offers(ClusterSpec("aws", accelerator="a100", accelerator_count=2))
    assert {o.instance_type for o in a100} == {"p4d.24xlarge", "p4de.24xlarge"}
    assert all(o.spot_price_per_hour is not None for o in a100)


async def test_cluster_resources_are_tagged_and_open_ssh_to_the_caller_only(aws, sim):
    context, request = await prepare_one(aws, ClusterSpec("aws", spot="never"), "sky-aws0003")
    assert sorted(sim.cluster_resources()) == ["skyward-sky-aws0003", "skyward-sky-aws0003"]
    assert sim.ingress() == [
        ("skyward-sky-aws0003", 22, ["127.0.0.1/32"]),
        ("skyward-sky-aws0003", "all", ["skyward-sky-aws0003"]),
    ]
    iid = await aws.launch(context, request)
    instance = await aws.wait_running(context, iid, 60)
    assert instance.ip.startswith("127.0.") and instance.ssh_port == 22 and not instance.spot
    assert "ssh_keys:" in sim.user_data(iid) and request.host_public_key in sim.user_data(iid)
    await tear_down(aws, context, iid)


async def test_nodes_admit_each_other_and_require_imdsv2(aws, sim):
    """What EC2 itself answers (moto, through boto3): all traffic from the group's own
    members, and instances that serve metadata (the user data with the host key) only
    with an IMDSv2 session token, one hop away."""
    context, request = await prepare_one(aws, ClusterSpec("aws", spot="never"), "sky-aws0007")
    ec2 = boto3.client("ec2", endpoint_url=sim.endpoint, region_name="us-east-1")
    [group] = ec2.describe_security_groups(GroupIds=[context.group_id])["SecurityGroups"]
    rules = {(r["IpProtocol"], r.get("FromPort")): r for r in group["IpPermissions"]}
    assert set(rules) == {("tcp", 22), ("-1", None)}
    assert [p["GroupId"] for p in rules["-1", None]["UserIdGroupPairs"]] == [group["GroupId"]]
    assert rules["-1", None]["IpRanges"] == []  # from the members only, never a CIDR
    assert [r["CidrIp"] for r in rules["tcp", 22]["IpRanges"]] == ["127.0.0.1/32"]
    iid = await aws.launch(context, request)
    await aws.wait_running(context, iid, 60)
    [reservation] = ec2.describe_instances(InstanceIds=[iid])["Reservations"]
    options = reservation["Instances"][0]["MetadataOptions"]
    assert options["HttpTokens"] == "required"
    assert options["HttpPutResponseHopLimit"] == 1
    assert options["HttpEndpoint"] == "enabled"
    await tear_down(aws, context, iid)


async def test_capacity_error_falls_back_to_the_next_offer_and_says_so(aws, sim, caplog):
    sim.capacity_types.add("p4d.24xlarge")
    spec = ClusterSpec("aws", accelerator="A100", accelerator_count=2, spot="never")
    context, request = await prepare_one(aws, spec, "sky-aws0004")
    with caplog.at_level(logging.WARNING, logger="skyward"):
        iid = await aws.launch(context, request)
    instance = await aws.wait_running(context, iid, 60)
    assert instance.offer.instance_type == "p4de.24xlarge"
    assert "InsufficientInstanceCapacity" in caplog.text and "trying p4de.24xlarge" in caplog.text
    await tear_down(aws, context, iid)


async def test_429_is_retried_after_retry_after_and_500_once(aws, sim):
    context, request = await prepare_one(aws, ClusterSpec("aws", spot="never"), "sky-aws0005")
    sim.fail("RunInstances", 429, "RequestLimitExceeded", retry_after=1)
    sim.fail("DescribeInstances", 500, "InternalError")
    start = time.monotonic()
    iid = await aws.launch(context, request)
    assert time.monotonic() - start >= 1.0
    await aws.wait_running(context, iid, 60)
    runs = [status for action, status in sim.calls if action == "RunInstances"]
    assert runs[-2:] == [429, 200]
    assert ("DescribeInstances", 500) in sim.calls
    await tear_down(aws, context, iid)


async def test_spot_interruption_is_reported_as_preemption(aws, sim):
    context, request = await prepare_one(aws, ClusterSpec("aws", spot="always"), "sky-aws0006")
    iid = await aws.launch(context, request)
    instance = await aws.wait_running(context, iid, 60)
    assert instance.spot
    assert (await aws.status(context, iid)).state is InstanceState.RUNNING
    sim.preempt(iid)
    report = await aws.status(context, iid)
    assert report.state is InstanceState.PREEMPTED
    assert "Server.SpotInstanceTermination" in report.reason
    await tear_down(aws, context, iid)


@pytest.mark.slow
def test_kernel_up_run_down_on_aws(sim):
    check_two_node_life({**CREDENTIALS, "SKYWARD_AWS_ENDPOINT": sim.endpoint}, "aws", sim)


@pytest.mark.slow
def test_notebook_runs_against_the_simulator(sim, pytestconfig):
    env = {**CREDENTIALS, "SKYWARD_AWS_ENDPOINT": sim.endpoint}
    path = str(pytestconfig.rootpath / "notebooks/aws.ipynb")
    check_example_notebook(path, env, "aws", sim)
