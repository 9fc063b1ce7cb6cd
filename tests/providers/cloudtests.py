"""Helpers the cloud provider tests share (keys, launching, SSH, a kernel driven through
up/run/down), so each provider's test file says only what differs."""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh
from skyward.core.provider import ClusterKeys, LaunchRequest, StatusReport
from skyward.model import ClusterSpec, Instance

ROOT = Path(__file__).resolve().parents[2]


def make_keys(folder: Path) -> ClusterKeys:
    """A cluster key pair written 0600 in ``folder``."""
    key = asyncssh.generate_private_key("ssh-ed25519", comment="skyward-test")
    path = folder / "id_ed25519"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.export_private_key("openssh"))
    return ClusterKeys(str(path), key.export_public_key("openssh").decode().strip())


@dataclass
class Launched:
    instance_id: str
    host_key: asyncssh.SSHKey


def launch_request(cluster_id: str, node: int, spec: ClusterSpec, keys: ClusterKeys) -> Any:
    """A LaunchRequest with a fresh host key; returns (request, public host key)."""
    host = asyncssh.generate_private_key("ssh-ed25519")
    request = LaunchRequest(
        cluster_id, node, spec, keys,
        host.export_private_key("openssh").decode(),
        host.export_public_key("openssh").decode().strip(),
    )  # fmt: skip
    return request, host.convert_to_public()


async def ssh_echo(instance: Instance, keys: ClusterKeys, host_key: asyncssh.SSHKey) -> str:
    """Run ``echo`` on the instance over SSH with the host key pinned."""
    async with asyncssh.connect(
        instance.ip,
        instance.ssh_port,
        username="root",
        client_keys=[keys.private_key_path],
        known_hosts=([host_key], [], []),
        agent_path=None,
    ) as conn:
        result = await conn.run("echo pinned-ok", check=True)
        return str(result.stdout).strip()


async def prepare_one(
    provider: Any, spec: ClusterSpec, cluster_id: str
) -> tuple[Any, LaunchRequest]:
    """A prepared cluster (keys as the session makes them) and the request of its node 0."""
    from skyward.transport.keys import generate_host_key, make_cluster_keys

    keys = await make_cluster_keys(cluster_id)
    context = await provider.prepare(cluster_id, spec, keys)
    host_key, host_public = generate_host_key()
    return context, LaunchRequest(cluster_id, 0, spec, keys, host_key, host_public)


async def tear_down(provider: Any, context: Any, *instance_ids: str) -> None:
    """Destroy the instances, then the cluster's resources."""
    for instance_id in instance_ids:
        await provider.destroy(context, instance_id)
    await provider.teardown(context)


async def launch_after_refusal(
    provider: Any, sim: Any, cluster_id: str, spec: ClusterSpec, folder: Path, caplog: Any
) -> tuple[Any, str]:
    """Prepare a cluster, have the simulator refuse the next launch for capacity, and
    launch one node: the context and the instance, the fallback's warnings in ``caplog``."""
    keys = make_keys(folder)
    context = await provider.prepare(cluster_id, spec, keys)
    sim.refuse_capacity(1)
    request, _ = launch_request(cluster_id, 0, spec, keys)
    with caplog.at_level(logging.WARNING, logger="skyward.providers"):
        instance_id = await provider.launch(context, request)
    return context, instance_id


async def preemption_report(
    provider: Any, sim: Any, cluster_id: str, spec: ClusterSpec, folder: Path
) -> StatusReport:
    """Launch one node, wait until it runs, have the simulator preempt it: what the next
    status poll reports (the node is destroyed and the cluster torn down after)."""
    keys = make_keys(folder)
    context = await provider.prepare(cluster_id, spec, keys)
    request, _ = launch_request(cluster_id, 0, spec, keys)
    instance_id = await provider.launch(context, request)
    await provider.wait_running(context, instance_id, 30)
    sim.preempt(instance_id)
    report = await provider.status(context, instance_id)
    await provider.destroy(context, instance_id)
    await provider.teardown(context)
    return report


FACTS_CELL = """\
from skyward.jupyter.extension import session as _session
_facts = []
_session().bus.subscribe_all(lambda e: _facts.append(type(e).__name__))
"""

RUN_CELL = """\
%%skyward run
import os
print("hello from node", os.environ["SKYWARD_NODE"], "of", os.environ["SKYWARD_NODES"])
"""

PER_NODE = [
    "InstanceRequested",
    "InstanceLaunched",
    "InstanceRunning",
    "InstanceProvisioned",
    "BootstrapRequested",
    "InstanceBootstrapped",
]


def check_fact_sequence(facts: list[str], nodes: int) -> None:
    """The documented order: cluster facts around each node's facts, then the shutdown."""
    assert facts[0] == "ClusterRequested", facts
    assert facts.index("ClusterProvisioned") < facts.index("InstanceRequested")
    for kind in PER_NODE:
        assert facts.count(kind) == nodes, (kind, facts)
    # Each node's own facts come in order; nodes interleave, so compare the k-th of each.
    for k in range(nodes):
        positions = [[i for i, f in enumerate(facts) if f == kind][k] for kind in PER_NODE]
        assert positions == sorted(positions), (k, facts)
    ready = facts.index("ClusterReady")
    assert ready > max(i for i, f in enumerate(facts) if f == "InstanceBootstrapped")
    tail = facts[facts.index("ShutdownRequested") :]
    assert tail.count("InstanceDestroyed") == nodes and tail[-1] == "ClusterDestroyed", tail
    assert "Error" not in facts, facts


def drive_kernel(env: dict[str, str], provider: str, timeout: float = 240) -> dict[str, Any]:
    """A real kernel: up (2 nodes, A100:2), one run cell, down; what each cell showed."""
    from tests.integration.kernel import Kernel

    kernel = Kernel(env={**os.environ, **env})
    try:
        assert kernel.execute("%load_ext skyward").ok
        assert kernel.execute(FACTS_CELL).ok
        up = kernel.execute(f"%skyward up --provider {provider} --gpus A100:2 --nodes 2", timeout)
        assert up.ok, up.text()
        run = kernel.execute(RUN_CELL, timeout=120)
        assert run.ok, run.text()
        down = kernel.execute("%skyward down", timeout=180)
        assert down.ok, down.text()
        facts = kernel.execute("print(_facts)")
        names = re.findall(r"'(\w+)'", facts.text())
        return {"up": up.text(), "run": run.text(), "down": down.text(), "facts": names}
    finally:
        kernel.shutdown()


def check_two_nodes(env: dict[str, str], provider: str) -> None:
    """Up two nodes on ``provider`` in a real kernel, run a cell, down: each node answered
    and the facts came in the documented order."""
    shown = drive_kernel(env, provider)
    assert f"ready: 2 node(s) on {provider}" in shown["up"], shown["up"]
    for node in (0, 1):
        assert f"[node {node}] hello from node {node} of 2" in shown["run"], shown["run"]
    assert "destroyed (2 instance(s))" in shown["down"]
    check_fact_sequence(shown["facts"], 2)


def run_notebook(name: str) -> list[str]:
    """Execute ``notebooks/<name>.ipynb`` headless (the kernel inherits os.environ, where
    the test put the simulator's endpoint); each code cell's text output."""
    import nbformat
    from nbclient import NotebookClient

    from tests.integration.test_quickstart import outputs_text

    nb = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    NotebookClient(nb, timeout=240, kernel_name="python3").execute()
    return [outputs_text(c) for c in nb.cells if c.cell_type == "code"]


def check_notebook(texts: list[str], provider: str) -> None:
    """The cloud example notebooks: offers, up, run, status, down."""
    _, offers, up, run, status, down = texts
    assert offers.splitlines()[0].startswith("provider") and provider in offers, offers
    assert f"ready: 2 node(s) on {provider}" in up, up
    for node in (0, 1):
        assert f"[node {node}] hello from node {node} of 2" in run, run
    assert "node 0" in status and "node 1" in status, status
    assert "destroyed (2 instance(s))" in down, down
