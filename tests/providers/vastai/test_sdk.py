"""The official ``vastai`` SDK drives the Vast.ai simulator (search, rent on demand and
interruptible, status, SSH address, destroy, gone), and our provider runs the same
scenario on it."""

from __future__ import annotations

import pytest
from skyward.model import ClusterSpec
from skyward.providers.vastai import VastProvider

from ..scenario import check_scenario, provider_scenario
from ..sdkvenv import drive_sdk
from .simulator import API_KEY, VastSimulator, api_base


@pytest.fixture
def sim():
    with VastSimulator() as simulator:
        yield simulator


def test_the_official_sdk_drives_the_simulator(sim, tmp_path):
    env = {
        "VAST_SERVER_URL": sim.url,
        "VAST_API_KEY": API_KEY,
    }
    report = drive_sdk("vastai", __file__, tmp_path, env)
    for kind, is_bid in (("on-demand", False), ("bid", True)):
        seen = report[kind]
        assert seen["is_bid"] is is_bid and seen["status"] == "running", seen
        assert seen["verification"] == "verified" and seen["extra_env"] == {}, seen
        assert seen["banner"].startswith("SSH-2.0-") and seen["listed"] and seen["gone"], seen
    assert report["keys_left"] == 0
    assert sim.instances == {} and sim.ssh_keys == {} and sim.backing_count() == 0
    assert sim.count("GET", r"^/api/v1/instances/$") >= 2


@pytest.mark.parametrize("spot", [False, True], ids=["on-demand", "spot"])
async def test_our_provider_runs_the_same_scenario(sim, tmp_path, spot):
    provider = VastProvider(api_key=API_KEY, endpoint=api_base(sim), backoff=0.05)
    spec = ClusterSpec("vastai", accelerator="RTX4090", accelerator_count=1,
                       spot="always" if spot else "never")  # fmt: skip
    check_scenario(await provider_scenario(provider, spec, tmp_path), spot)
    assert sim.instances == {} and sim.ssh_keys == {} and sim.backing_count() == 0
