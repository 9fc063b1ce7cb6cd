"""The AWS and GCP simulators through a real kernel: a cluster's life, the example notebook."""

from __future__ import annotations

import os
from typing import Any

from ..cloudtests import check_two_nodes


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
    """Up two A100:2 nodes on ``provider``'s simulator, run a cell, down (see
    ``check_two_nodes``); then the simulator has nothing left."""
    check_two_nodes(env, provider)
    assert sim.live_instances() == [] and sim.cluster_resources() == []
    assert sim.backing.alive() == []


def check_example_notebook(path: str, env: dict[str, str], provider: str, sim: Any) -> None:
    """The provider's example notebook against its simulator: up, a cell, down."""
    texts = run_notebook(path, env)
    assert f"ready: 1 node(s) on {provider}" in texts[1], texts[1]
    assert "CPUs" in texts[2]
    assert "destroyed (1 instance(s))" in texts[4]
    assert sim.live_instances() == [] and sim.cluster_resources() == []
