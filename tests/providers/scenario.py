"""The scenario the official SDKs run against each simulator, run by our own provider:
create (on demand or spot), status, SSH address, destroy, gone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from skyward.core.provider import InstanceState
from skyward.model import ClusterSpec

from .cloudtests import launch_request, make_keys, ssh_echo


async def provider_scenario(provider: Any, spec: ClusterSpec, folder: Path) -> dict[str, Any]:
    """Run the scenario with ``provider``; what it saw (the instance, each state)."""
    keys = make_keys(folder)
    cluster = f"sky-{spec.provider[:2]}-{spec.spot}"
    context = await provider.prepare(cluster, spec, keys)
    request, host_key = launch_request(cluster, 0, spec, keys)
    iid = await provider.launch(context, request)
    instance = await provider.wait_running(context, iid, 30)
    seen = {
        "spot": instance.spot,
        "running": (await provider.status(context, iid)).state,
        "ssh": await ssh_echo(instance, keys, host_key),
    }
    await provider.destroy(context, iid)
    seen["after"] = (await provider.status(context, iid)).state
    await provider.teardown(context)
    return seen


def check_scenario(seen: dict[str, Any], spot: bool) -> None:
    assert seen["spot"] is spot
    assert seen["running"] is InstanceState.RUNNING
    assert seen["ssh"] == "pinned-ok"
    assert seen["after"] in (InstanceState.TERMINATED, InstanceState.PREEMPTED)
