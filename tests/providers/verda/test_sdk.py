"""The official ``verda`` SDK drives the Verda simulator (availability, create on demand
and spot, status, SSH address, delete, gone), and our provider runs the same scenario."""

from __future__ import annotations

import pytest
from skyward.model import ClusterSpec
from skyward.providers.verda import VerdaProvider

from ..scenario import check_scenario, provider_scenario
from ..sdkvenv import drive_sdk
from .simulator import CLIENT_ID, CLIENT_SECRET, VerdaSimulator, api_base


@pytest.fixture
def sim():
    with VerdaSimulator() as simulator:
        yield simulator


def test_the_official_sdk_drives_the_simulator(sim, tmp_path):
    env = {
        "VERDA_BASE_URL": api_base(sim),
        "VERDA_CLIENT_ID": CLIENT_ID,
        "VERDA_CLIENT_SECRET": CLIENT_SECRET,
    }
    report = drive_sdk("verda", __file__, tmp_path, env)
    for kind, spot in (("on-demand", False), ("spot", True)):
        seen = report[kind]
        assert seen["is_spot"] is spot and seen["available"] is True, seen
        assert (seen["currency"], seen["price"], seen["spot_price"]) == ("usd", 1.29, 0.52)
        assert (seen["model"], seen["name"]) == ("A100", "A100 SXM4 80GB") and seen["best_for"]
        assert seen["banner"].startswith("SSH-2.0-") and seen["listed"], seen
        assert seen["gone"] == "not_found", seen
    assert report["left"] == 0
    assert sim.vms == {} and sim.volumes == {} and sim.backing_count() == 0


@pytest.mark.parametrize("spot", [False, True], ids=["on-demand", "spot"])
async def test_our_provider_runs_the_same_scenario(sim, tmp_path, spot):
    provider = VerdaProvider(CLIENT_ID, CLIENT_SECRET, endpoint=api_base(sim), backoff=0.05)
    spec = ClusterSpec("verda", accelerator="A100", accelerator_count=1,
                       spot="always" if spot else "never")  # fmt: skip
    check_scenario(await provider_scenario(provider, spec, tmp_path), spot)
    assert sim.vms == {} and sim.volumes == {} and sim.backing_count() == 0
