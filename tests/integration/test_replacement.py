"""While a node is being replaced: `status` says so, and a cell for it waits for the
replacement (saying so, within --timeout) or fails at once with --no-wait. It never runs
on fewer nodes than it is for, and never reports ok for a node it did not run on."""

from __future__ import annotations

import os
import signal
import time

import pytest

from .kernel import Kernel
from .test_faults import instances, node_pid, wait_until

pytestmark = pytest.mark.slow

WHO = "%%skyward run\nimport os\n(os.environ['WORLD_SIZE'], os.environ['SKYWARD_NODE'])"


def _node_line(k: Kernel, node: int) -> str:
    text = k.execute("%skyward status").text()
    return next((ln for ln in text.splitlines() if ln.strip().startswith(f"node {node} ")), "")


def _lose(k: Kernel, node: int) -> str:
    """Kill ``node``'s instance; return once status shows it being replaced."""
    victim = instances(k)[node]
    os.kill(node_pid(victim), signal.SIGKILL)
    assert wait_until(lambda: "replacing" in _node_line(k, node), 30), _node_line(k, node)
    return victim


def test_cells_during_a_replacement_wait_or_fail_never_run_on_fewer_nodes():
    k = Kernel()
    try:
        assert k.execute("%load_ext skyward").ok
        assert k.execute("%skyward up --provider container --nodes 2", timeout=180).ok
        victim = _lose(k, 1)
        assert "replacing" in _node_line(k, 1) and "ready" in _node_line(k, 0)

        start = time.monotonic()
        refused = k.execute("%%skyward run --on 1 --no-wait\n1 + 1", timeout=30)
        assert not refused.ok  # an error reply: Run All stops here
        assert refused.error()["ename"] == "NodeUnavailable"
        assert "node 1 is being replaced" in refused.error()["evalue"]
        assert "did not run" in refused.error()["evalue"]
        assert time.monotonic() - start < 5

        waited = k.execute(WHO, timeout=180)
        assert waited.ok, waited.text()
        assert "node 1 is being replaced" in waited.text() and "waits for it" in waited.text()
        assert waited.values() == {0: "('2', '0')", 1: "('2', '1')"}
        assert instances(k)[1] != victim
        assert "ready" in _node_line(k, 1)

        _lose(k, 1)
        late = k.execute("%%skyward run --timeout 0.5\n1 + 1", timeout=60)
        assert not late.ok and late.error()["ename"] == "NodeUnavailable"
        assert "still being replaced after 0.5 s" in late.error()["evalue"]
        assert wait_until(lambda: "ready" in _node_line(k, 1), 120)
        again = k.execute(WHO, timeout=60)
        assert again.ok and again.values() == {0: "('2', '0')", 1: "('2', '1')"}
    finally:
        k.execute("%skyward down", timeout=60)
        k.shutdown()


def test_a_node_that_is_not_in_the_cluster_is_an_error_not_ok():
    k = Kernel()
    try:
        assert k.execute("%load_ext skyward").ok
        assert k.execute("%skyward up --provider container --nodes 1", timeout=180).ok
        result = k.execute("%%skyward run --on 3\n1", timeout=30)
        assert not result.ok and result.error()["ename"] == "NodeUnavailable"
        assert "no node 3 in this cluster (nodes are 0)" in result.error()["evalue"]
    finally:
        k.execute("%skyward down", timeout=60)
        k.shutdown()
