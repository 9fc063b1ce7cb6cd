"""One way to build a provider (``provider_for``), and every provider it builds speaks the
protocol of ``core.provider``."""

from __future__ import annotations

import pytest
from skyward.core.provider import Provider
from skyward.errors import UsageError
from skyward.model import ClusterSpec
from skyward.providers import PROVIDERS, get_provider, provider_for

CREDENTIALS = {
    "RUNPOD_API_KEY": "test-key",
    "VAST_API_KEY": "test-key",
    "VERDA_CLIENT_ID": "test-id",
    "VERDA_CLIENT_SECRET": "test-secret",
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "GOOGLE_CLOUD_PROJECT": "test-project",
    "SKYWARD_GCP_ENDPOINT": "http://127.0.0.1:9",  # anonymous credentials, no call made
}


@pytest.mark.parametrize("runtime", ["process", "docker", "podman"])
def test_the_container_provider_gets_the_runtime_of_the_spec(runtime):
    provider = provider_for("container", ClusterSpec("container", runtime=runtime))
    assert provider.name == "container"
    assert getattr(provider, "runtime", None) == runtime


@pytest.mark.parametrize("name", sorted(PROVIDERS))
def test_every_provider_builds_and_speaks_the_protocol(name, monkeypatch):
    for key, value in CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    provider = provider_for(name, ClusterSpec(name))
    assert isinstance(provider, Provider)
    assert provider.name == name


def test_an_unknown_provider_names_the_known_ones():
    with pytest.raises(UsageError, match="unknown provider 'nope': available are aws, container"):
        get_provider("nope")
