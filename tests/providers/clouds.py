"""Each cloud simulator behind one small face, so a kernel test can run on all five.

A :class:`Cloud` says what a kernel needs to reach its simulator (``env``), what is still
billed there (``live``), every shared resource a cluster made there, with the details a
change would show (``resources``: key pairs, security groups and their rules, firewall
rules, account SSH keys, startup scripts, volumes), and can sell the cloud out (no offer
listed, every launch refused).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

__all__ = ["CLOUDS", "Cloud", "by_name", "open_cloud"]

CLOUDS = ("aws", "gcp", "runpod", "vastai", "verda")

AWS_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


def by_name(url: str) -> str:
    """``url`` with the host ``localhost``: the real APIs are reached by name, so the
    provider resolves it (in an executor thread, which at interpreter exit is what
    fails); an address literal would skip that."""
    return url.replace("//127.0.0.1:", "//localhost:", 1)


class Cloud:
    """One provider's simulator, as the kernel tests see it."""

    def __init__(
        self,
        name: str,
        sim: Any,
        env: dict[str, str],
        up_args: str,
        live: Callable[[], list[str]],
        resources: Callable[[], dict[str, Any]],
        sell_out: Callable[[bool], None],
    ) -> None:
        self.name = name
        self.sim = sim
        self.env = env
        self.up_args = up_args
        self._live = live
        self._resources = resources
        self._sell_out = sell_out

    def kernel_env(self) -> dict[str, str]:
        return {**os.environ, **self.env}

    def live(self) -> list[str]:
        """The instances the cloud still bills (not terminated, not deleted)."""
        return sorted(self._live())

    def resources(self) -> dict[str, Any]:
        """Every shared resource there, with what a change to it would show."""
        return self._resources()

    def backing(self) -> int:
        """Real local nodes still running behind simulated instances."""
        backing = getattr(self.sim, "backing", None)
        if backing is not None and hasattr(backing, "alive"):
            return len(backing.alive())
        return int(self.sim.backing_count())

    def sell_out(self, sold_out: bool = True) -> None:
        self._sell_out(sold_out)

    def close(self) -> None:
        self.sell_out(False)
        self.sim.close()


def _aws() -> Cloud:
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.ec2.models import ec2_backends
    from skyward.providers.aws.catalog import ON_DEMAND_USD

    from .aws.simulator import AwsSimulator

    sim = AwsSimulator()
    ec2 = ec2_backends[DEFAULT_ACCOUNT_ID]["us-east-1"]

    def resources() -> dict[str, Any]:
        groups = {g.name: g.id for g in ec2.describe_security_groups() if g.name != "default"}
        keys = {k.key_name: (k.id, k.key_fingerprint) for k in ec2.describe_key_pairs([])}
        found: dict[str, Any] = {}
        if groups:
            found["security groups"] = groups
            found["ingress"] = sorted(map(repr, sim.ingress()))
        if keys:
            found["key pairs"] = keys
        return found

    def sell_out(sold_out: bool) -> None:
        sim.capacity_types.clear()
        if sold_out:
            sim.capacity_types.update(ON_DEMAND_USD)

    env = {**AWS_CREDENTIALS, "SKYWARD_AWS_ENDPOINT": sim.endpoint}
    return Cloud("aws", sim, env, "", sim.live_instances, resources, sell_out)


def _gcp() -> Cloud:
    from .gcp.simulator import MACHINE_TYPES, GcpSimulator

    sim = GcpSimulator()

    def resources() -> dict[str, Any]:
        with sim._lock:
            rules = {name: dict(sim.firewalls[name]) for name in sim.cluster_resources()}
        return {"firewall rules": rules} if rules else {}

    def sell_out(sold_out: bool) -> None:
        sim.capacity.clear()
        if sold_out:
            sim.capacity.update(MACHINE_TYPES)

    env = {"GOOGLE_CLOUD_PROJECT": "sim-project", "SKYWARD_GCP_ENDPOINT": sim.endpoint}
    return Cloud("gcp", sim, env, "", sim.live_instances, resources, sell_out)


def _runpod() -> Cloud:
    from .runpod.simulator import API_KEY, RunPodSimulator

    sim = RunPodSimulator()
    env = {"SKYWARD_RUNPOD_ENDPOINT": by_name(sim.url), "RUNPOD_API_KEY": API_KEY}
    return Cloud(
        "runpod",
        sim,
        env,
        "--gpus A100:1",
        lambda: [p.id for p in sim.live_pods()],
        dict,  # RunPod has no cluster-level resources: the key travels per pod
        sim.sell_out,
    )


def _vastai() -> Cloud:
    from .vastai.simulator import API_KEY, VastSimulator, api_base

    sim = VastSimulator()

    def resources() -> dict[str, Any]:
        with sim.lock:
            keys = dict(sim.ssh_keys)
        return {"ssh keys": keys} if keys else {}

    def live() -> list[str]:
        with sim.lock:
            return [str(i) for i in sim.instances]

    env = {"SKYWARD_VASTAI_ENDPOINT": by_name(api_base(sim)), "VAST_API_KEY": API_KEY}
    return Cloud("vastai", sim, env, "--gpus A100:1", live, resources, sim.sell_out)


def _verda() -> Cloud:
    from .verda.simulator import CLIENT_ID, CLIENT_SECRET, VerdaSimulator, api_base

    sim = VerdaSimulator()

    def resources() -> dict[str, Any]:
        with sim.lock:
            found = {
                "ssh keys": {k: dict(v) for k, v in sim.ssh_keys.items()},
                "startup scripts": {k: dict(v) for k, v in sim.scripts.items()},
                "volumes": {v["id"]: dict(v) for v in sim.billed_volumes()},
            }
        return {kind: items for kind, items in found.items() if items}

    def live() -> list[str]:
        with sim.lock:
            return list(sim.vms)

    env = {
        "SKYWARD_VERDA_ENDPOINT": by_name(api_base(sim)),
        "VERDA_CLIENT_ID": CLIENT_ID,
        "VERDA_CLIENT_SECRET": CLIENT_SECRET,
    }
    return Cloud("verda", sim, env, "--gpus A100:1", live, resources, sim.sell_out)


def open_cloud(name: str) -> Cloud:
    """Start the simulator of ``name`` (close it with :meth:`Cloud.close`)."""
    return {"aws": _aws, "gcp": _gcp, "runpod": _runpod, "vastai": _vastai, "verda": _verda}[name]()
