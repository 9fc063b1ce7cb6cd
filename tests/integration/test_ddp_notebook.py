"""The DDP notebook trains one step with torch on two container nodes (gloo): after a
step on different data, both nodes hold identical parameters, so gradients were averaged."""

from __future__ import annotations

import nbformat
import pytest
from nbclient import NotebookClient

from .test_quickstart import outputs_text

pytestmark = pytest.mark.slow


def test_ddp_notebook_averages_gradients(pytestconfig):
    nb = nbformat.read(pytestconfig.rootpath / "notebooks" / "ddp.ipynb", as_version=4)
    NotebookClient(nb, timeout=900, kernel_name="python3").execute()
    texts = [outputs_text(c) for c in nb.cells if c.cell_type == "code"]
    step = texts[2]
    assert "[node 0] rank 0 of 2" in step and "[node 1] rank 1 of 2" in step
    losses = [line.split("local loss ")[1] for line in step.splitlines() if "local loss" in line]
    assert len(losses) == 2 and losses[0] != losses[1]  # the nodes saw different data
    assert "parameters identical on both nodes" in texts[4]
