"""One cluster's life through a real kernel: up, a cell, down, with the facts recorded."""

from __future__ import annotations

import ast
import os
from typing import Any

from tests.integration.kernel import Kernel

LIFECYCLE = (
    "ClusterProvisioned",
    "InstanceLaunched",
    "InstanceRunning",
    "InstanceProvisioned",
    "InstanceBootstrapped",
    "ClusterReady",
    "InstanceDestroyed",
    "ClusterDestroyed",
)

RECORD = """\
%load_ext skyward
from skyward.jupyter.extension import pool as _pool
facts = []
_pool().bus.subscribe_all(lambda event: facts.append(type(event).__name__))
"""

CELL = """\
%%skyward run
import os
print("hello from node", os.environ["SKYWARD_NODE"], "of", os.environ["SKYWARD_NODES"])
"""


def cluster_life(env: dict[str, str], up: str) -> tuple[list[str], dict[str, str]]:
    """Run ``up``, a cell and ``%skyward down`` in a fresh kernel; return the lifecycle
    facts in order and each step's text."""
    kernel = Kernel(env={**os.environ, **env})
    try:
        assert kernel.execute(RECORD).ok
        texts = {}
        for step, code in (("up", up), ("run", CELL), ("down", "%skyward down")):
            result = kernel.execute(code, timeout=180)
            texts[step] = result.text()
            assert result.ok, f"{step} failed:\n{texts[step]}"
        shown = kernel.execute("print(facts)")
        facts = ast.literal_eval(shown.text().strip().splitlines()[-1])
    finally:
        kernel.shutdown()
    return [f for f in facts if f in LIFECYCLE], texts


def assert_two_node_sequence(facts: list[str]) -> None:
    """The documented order, per node and for the cluster, for a 2-node up and down."""
    for name in LIFECYCLE[1:5] + ("InstanceDestroyed",):
        assert facts.count(name) == 2, (name, facts)
    assert facts[0] == "ClusterProvisioned"
    assert facts.index("ClusterReady") > max(
        i for i, f in enumerate(facts) if f == "InstanceBootstrapped"
    )
    for earlier, later in zip(LIFECYCLE[1:5], LIFECYCLE[2:6], strict=True):
        first_later = facts.index(later)
        assert facts.index(earlier) < first_later, (earlier, later, facts)
    assert facts[-1] == "ClusterDestroyed"
    assert facts.index("InstanceDestroyed") > facts.index("ClusterReady")


def run_notebook(path: str, env: dict[str, str]) -> list[str]:
    """Execute a notebook in a kernel that has ``env``; return each code cell's text."""
    import nbformat
    from nbclient import NotebookClient

    from tests.integration.test_quickstart import outputs_text

    nb = nbformat.read(path, as_version=4)
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        NotebookClient(nb, timeout=300, kernel_name="python3").execute()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return [outputs_text(c) for c in nb.cells if c.cell_type == "code"]


def check_two_node_life(env: dict[str, str], provider: str, sim: Any) -> None:
    """Up two A100:2 nodes on ``provider``'s simulator, run a cell, down: every node
    answered, the facts came in order, and the simulator has nothing left."""
    facts, texts = cluster_life(env, f"%skyward up --provider {provider} --gpus A100:2 --nodes 2")
    assert f"ready: 2 node(s) on {provider}" in texts["up"], texts["up"]
    for node in (0, 1):
        assert f"[node {node}] hello from node {node} of 2" in texts["run"], texts["run"]
    assert "destroyed (2 instance(s))" in texts["down"]
    assert_two_node_sequence(facts)
    assert sim.live_instances() == [] and sim.cluster_resources() == []
    assert sim.backing.alive() == []


def check_example_notebook(path: str, env: dict[str, str], provider: str, sim: Any) -> None:
    """The provider's example notebook against its simulator: up, a cell, down."""
    texts = run_notebook(path, env)
    assert f"ready: 1 node(s) on {provider}" in texts[1], texts[1]
    assert "CPUs" in texts[2]
    assert "destroyed (1 instance(s))" in texts[4]
    assert sim.live_instances() == [] and sim.cluster_resources() == []
