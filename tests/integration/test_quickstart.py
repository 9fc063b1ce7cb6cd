"""The product's main job, end to end: a real kernel, real SSH, real local instances."""

from __future__ import annotations

import re
import threading
import time

import nbformat
import pytest
from nbclient import NotebookClient

from tests.ours import live_processes

from .kernel import ANSI, Kernel

pytestmark = pytest.mark.slow

NOTEBOOK = "notebooks/quickstart.ipynb"


def outputs_text(cell) -> str:
    parts = []
    for out in cell.get("outputs", []):
        if out["output_type"] == "stream":
            parts.append(out["text"])
        elif out["output_type"] == "error":
            parts.append("\n".join(out["traceback"]))
        else:
            parts.append(out.get("data", {}).get("text/plain", ""))
    return ANSI.sub("", "\n".join(parts))


def test_quickstart_notebook_runs_headless(pytestconfig):
    before = set(live_processes())
    nb = nbformat.read(pytestconfig.rootpath / NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3").execute()
    code = [c for c in nb.cells if c.cell_type == "code"]
    texts = [outputs_text(c) for c in code]
    up, run, again, status, down = texts[1:6]
    assert re.search(r"✓ cluster sky-\w+ ready: 2 node\(s\) on container", up)
    for node in (0, 1):
        # The \r progress line updated in place: one line per node, at its last state.
        assert run.count(f"[node {node}] step 49") == 1
        assert f"[node {node}] step 48" not in run
        assert re.search(rf"\[node {node}\] hello from node {node} \d+", run)
        assert f"Out[{node}:" in again and "]: 42" in again
    assert "node 0" in status and "node 1" in status and "ready" in status
    assert re.search(r"cluster sky-\w+ destroyed \(2 instance\(s\)\)", down)
    assert set(live_processes()) - before == set()


@pytest.fixture(scope="module")
def kernel():
    k = Kernel()
    yield k
    k.shutdown()


@pytest.fixture(scope="module")
def cluster(kernel):
    assert kernel.execute("%load_ext skyward").ok
    result = kernel.execute("%skyward up --provider container --nodes 2", timeout=180)
    assert result.ok, result.text()
    yield kernel
    kernel.execute("%skyward down", timeout=60)


def test_up_shows_progress_per_node_while_it_runs(kernel):
    kernel.execute("%load_ext skyward")
    result = kernel.execute("%skyward up --provider container --nodes 2", timeout=180)
    assert result.ok, result.text()
    updates = [m for _, m in result.messages if m["msg_type"] == "update_display_data"]
    phases = " ".join(ANSI.sub("", m["content"]["data"]["text/plain"]) for m in updates)
    assert "bootstrapping: python" in phases or "bootstrapping: agent" in phases
    assert "node 0" in phases and "node 1" in phases
    assert "ready: 2 node(s)" in result.text()
    down = kernel.execute("%skyward down", timeout=60)
    assert "destroyed (2 instance(s))" in down.text()


def test_output_streams_before_the_cell_ends(cluster):
    code = (
        "%%skyward run\nimport time\n"
        "for i in range(6):\n    print('tick', i, flush=True)\n    time.sleep(0.25)\n"
    )
    result = cluster.execute(code)
    assert result.ok, result.text()
    shown = [t for t, m in result.messages if m["msg_type"] == "stream"]
    assert shown, result.messages
    # The first lines were on screen more than a second before the cell went idle.
    assert result.idle_at - shown[0] > 0.8
    for node in (0, 1):
        assert f"[node {node}] tick 5" in result.text()


def test_remote_exception_fails_the_cell_with_the_remote_traceback(cluster):
    code = "%%skyward run --on 1\nx = 1\ndef f():\n    return {}['missing']\nf()\n"
    result = cluster.execute(code)
    assert not result.ok
    error = result.error()
    text = ANSI.sub("", "\n".join(error["traceback"]))
    assert "[node 1]" in text and "KeyError" in text and "'missing'" in text
    assert re.search(r"Cell In\[\d+\], line 5", text)  # the cell's own line numbers
    assert "return {}['missing']" in text
    assert "agent.py" not in text and "skyward/pool.py" not in text


def test_interrupt_reaches_the_remote_cell_and_the_cluster_stays_usable(cluster):
    timer = threading.Timer(1.5, cluster.interrupt)
    timer.start()
    start = time.monotonic()
    result = cluster.execute(
        "%%skyward run\nimport time\nprint('sleeping', flush=True)\ntime.sleep(60)\n"
    )
    assert time.monotonic() - start < 15
    assert not result.ok
    assert result.error()["ename"] == "KeyboardInterrupt"
    shown = ANSI.sub("", "\n".join(result.error()["traceback"]))
    assert "time.sleep(60)" in shown  # where each node stopped, in IPython's words
    assert "extension.py" not in shown and "skyward/" not in shown  # and nothing of ours
    after = cluster.execute("%%skyward run\n'still here'\n")
    assert after.ok, after.text()
    assert after.values() == {0: "'still here'", 1: "'still here'"}


def test_targeting_one_node(cluster):
    code = "import os\nprint(os.environ['SKYWARD_NODE'], os.environ['SKYWARD_NODES'])\n"
    result = cluster.execute("%%skyward run --on 1\n" + code)
    assert result.ok
    assert "[node 1] 1 2" in result.text() and "[node 0]" not in result.text()


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("%skyward up --provider container --nodes 0", "at least 1 node"),
        ("%skyward up --provider nimbus", "is unknown"),
        ("%skyward up --gpus A100:x", "malformed"),
        ("%skyward frobnicate", "unknown command"),
    ],
)
def test_bad_arguments_are_one_line(kernel, line, message):
    kernel.execute("%load_ext skyward")
    result = kernel.execute(line)
    assert message in result.text()
    assert "Traceback" not in result.text()


def test_run_without_a_cluster(kernel):
    kernel.execute("%load_ext skyward")
    kernel.execute("%skyward down")
    result = kernel.execute("%%skyward run\n1\n")
    assert "no cluster is up" in result.text()


def test_failed_bootstrap_raises_naming_node_and_phase_and_destroys(kernel):
    before = set(live_processes())
    kernel.execute("%load_ext skyward")
    result = kernel.execute(
        "%skyward up --provider container --nodes 2 --pip no-such-package-xyz", timeout=240
    )
    assert not result.ok
    text = result.text()
    assert "phase 'packages'" in text and re.search(r"node [01]", text)
    assert "no-such-package-xyz" in text
    assert set(live_processes()) - before == set()


def test_kernel_exit_and_unload_destroy_everything():
    before = set(live_processes())
    k = Kernel()
    try:
        assert k.execute("%load_ext skyward").ok
        assert k.execute("%skyward up --provider container --nodes 2", timeout=180).ok
        assert len(set(live_processes()) - before) >= 2
        assert k.execute("%unload_ext skyward").ok
        assert set(live_processes()) - before == set()
        assert k.execute("%load_ext skyward").ok
        assert k.execute("%skyward up --provider container --nodes 1", timeout=180).ok
        assert set(live_processes()) - before
    finally:
        k.shutdown()
    deadline = time.monotonic() + 30
    while set(live_processes()) - before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert set(live_processes()) - before == set()
