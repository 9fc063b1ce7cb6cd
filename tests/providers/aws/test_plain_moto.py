"""The aws provider against a plain moto server, pointed at it only the way boto3's own
users point boto3 (``AWS_ENDPOINT_URL``), with no project middleware: moto has none of
AWS's public SSM image parameters, so the image lookup fails, and the user must be told
which lookup failed and what to set; with the image set, a node launches."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import boto3
import pytest
from skyward.core.provider import LaunchRequest
from skyward.errors import ProvisionError
from skyward.model import ClusterSpec
from skyward.providers.aws import AwsProvider
from skyward.transport.keys import generate_host_key, make_cluster_keys

from .test_aws import CREDENTIALS

SPEC = ClusterSpec("aws", accelerator="A10G", accelerator_count=1, spot="never")


@pytest.fixture(scope="module")
def moto_url():
    """``moto_server`` in its own process: nothing of this process's moto state in it."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                raise RuntimeError("moto_server did not start") from None
            time.sleep(0.1)
    yield f"http://127.0.0.1:{port}"
    server.terminate()
    try:
        server.wait(10)
    except subprocess.TimeoutExpired:  # a loaded machine: werkzeug can outlast SIGTERM
        server.kill()
        server.wait(10)


@pytest.fixture
def boto_env(moto_url, monkeypatch):
    for key, value in {**CREDENTIALS, "AWS_ENDPOINT_URL": moto_url}.items():
        monkeypatch.setenv(key, value)
    for key in ("SKYWARD_AWS_ENDPOINT", "SKYWARD_AWS_IMAGE", "AWS_ENDPOINT_URL_EC2"):
        monkeypatch.delenv(key, raising=False)
    return moto_url


async def test_a_missing_image_parameter_says_what_failed_and_what_to_set(boto_env):
    provider = AwsProvider()
    with pytest.raises(ProvisionError) as raised:
        await provider.prepare("sky-plain1", SPEC, await make_cluster_keys("sky-plain1"))
    message = str(raised.value)
    assert "ssm get_parameter: ParameterNotFound" in message
    assert "/aws/service/deeplearning/" in message and "us-east-1" in message
    assert "SKYWARD_AWS_IMAGE" in message and "--region" in message
    assert "\n" not in message


async def test_with_the_image_set_a_node_launches_on_plain_moto(boto_env, monkeypatch):
    images = boto3.client("ec2", region_name="us-east-1").describe_images(Owners=["amazon"])
    monkeypatch.setenv("SKYWARD_AWS_IMAGE", images["Images"][0]["ImageId"])
    provider = AwsProvider()
    keys = await make_cluster_keys("sky-plain2")
    context = await provider.prepare("sky-plain2", SPEC, keys)
    assert context.image_id == images["Images"][0]["ImageId"]
    host_key, host_public = generate_host_key()
    iid = await provider.launch(context, LaunchRequest("sky-plain2", 0, SPEC, keys, host_key,
                                                       host_public))  # fmt: skip
    described = boto3.client("ec2", region_name="us-east-1").describe_instances(InstanceIds=[iid])
    assert described["Reservations"][0]["Instances"][0]["InstanceType"] == "g5.xlarge"
    await provider.destroy(context, iid)
    await provider.teardown(context)
