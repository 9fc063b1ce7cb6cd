"""The official ``runpod`` SDK drives the RunPod simulator (create on demand and spot,
status, SSH address, terminate, gone), and our provider runs the same scenario on it."""

from __future__ import annotations

import pytest
from skyward.model import ClusterSpec
from skyward.providers.runpod import RunPodProvider

from ..scenario import check_scenario, provider_scenario
from ..sdkvenv import drive_sdk
from .simulator import API_KEY, GONE_MESSAGE, RunPodSimulator


@pytest.fixture(params=["null", "error"])
def sim(request):
    with RunPodSimulator(after_terminate=request.param) as simulator:
        yield simulator


def test_the_official_sdk_drives_the_simulator(sim, tmp_path):
    env = {
        "RUNPOD_API_BASE_URL": sim.url,
        "RUNPOD_API_KEY": API_KEY,
    }
    report = drive_sdk("runpod", __file__, tmp_path, env)
    for kind, pod_type in (("on-demand", "RESERVED"), ("spot", "INTERRUPTABLE")):
        seen = report[kind]
        assert seen["podType"] == pod_type and seen["desiredStatus"] == "RUNNING", seen
        assert seen["banner"].startswith("SSH-2.0-") and seen["listed"], seen
        expected = "null" if sim.after_terminate == "null" else f"error: {GONE_MESSAGE}"
        assert seen["gone"] == expected, seen
    assert sim.live_pods() == [] and sim.backing_count() == 0
    assert {"gpuTypes", "podFindAndDeployOnDemand", "podRentInterruptable", "pod", "myself",
            "podTerminate"} <= set(sim.operations)  # fmt: skip


@pytest.mark.parametrize("spot", [False, True], ids=["on-demand", "spot"])
async def test_our_provider_runs_the_same_scenario(sim, tmp_path, spot):
    provider = RunPodProvider(api_key=API_KEY, endpoint=sim.url, backoff=0.05)
    spec = ClusterSpec("runpod", accelerator="RTX4090", accelerator_count=1,
                       spot="always" if spot else "never")  # fmt: skip
    check_scenario(await provider_scenario(provider, spec, tmp_path), spot)
    assert sim.live_pods() == [] and sim.backing_count() == 0
