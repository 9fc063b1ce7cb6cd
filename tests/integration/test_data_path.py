"""Pushed variables cross the kernel's link once: by content, fanned out by the head node.

Bytes are counted where they really go: ``ss`` reports, for each TCP connection of the
kernel's process, the bytes it sent; each node listens on its own loopback address (its
SSH server, and its relay, which takes the kernel's blobs straight when the node is on
this machine), so a node's connections are its share of the kernel's uplink.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess

import pytest

from .kernel import cluster, ok

pytestmark = pytest.mark.slow

MB = 1_000_000
ARRAY = "np.random.default_rng({seed}).random(100 * MB // 8)"  # 100 MB of float64
NODE_DIGEST = "__import__('hashlib').sha256({name}.tobytes()).hexdigest()"


@pytest.fixture(scope="module")
def k():
    with cluster("--provider container --nodes 4 --pip numpy") as kernel:
        ok(kernel, f"import numpy as np, hashlib, os\nMB = {MB}")
        yield kernel


def value(kernel, expression):
    """A kernel-side value, through JSON."""
    return json.loads(ok(kernel, f"print(__import__('json').dumps({expression}))").text())


def sent_per_node(kernel, ssh_only: bool = False) -> dict[int, int]:
    """Bytes the kernel's process has sent on its connections to each node (``ssh_only``:
    to its SSH server alone)."""
    pid = value(kernel, "os.getpid()")
    nodes = value(
        kernel,
        "[[n.node, n.instance.ip, n.instance.ssh_port] for n in "
        "__import__('skyward.jupyter.extension', fromlist=['session']).session()"
        ".ready_cluster().node_instances()]",
    )
    by_ip = {ip: (node, port) for node, ip, port in nodes}
    lines = subprocess.run(["ss", "-tinpH"], capture_output=True, text=True).stdout.splitlines()
    sent = dict.fromkeys((node for node, _ in by_ip.values()), 0)
    for head, info in zip(lines, lines[1:], strict=False):
        if head[:1].isspace() or f"pid={pid}," not in head:
            continue
        ip, _, port = head.split()[4].rpartition(":")
        node, ssh_port = by_ip.get(ip, (None, 0))
        found = re.search(r"bytes_sent:(\d+)", info)
        if node is not None and found and (not ssh_only or int(port) == ssh_port):
            sent[node] += int(found[1])
    return sent


def pushed(kernel, code, nodes=None, ssh_only=False):
    """Run ``code`` remotely; the bytes sent to each node meanwhile, and each value."""
    before = sent_per_node(kernel, ssh_only)
    on = "" if nodes is None else f" --on {nodes}"
    result = ok(kernel, f"%%skyward run{on}\n{code}", timeout=300)
    after = sent_per_node(kernel, ssh_only)
    return {n: after[n] - before[n] for n in after}, result.values()


def test_an_unchanged_variable_is_sent_once_and_a_mutation_is_seen(k):
    ok(k, f"x1 = {ARRAY.format(seed=1)}")
    first, values = pushed(k, "float(x1.sum())", "0")
    assert first[0] > 100 * MB, first
    expected = value(k, "float(x1.sum())")
    assert float(values[0]) == expected

    again, values = pushed(k, "float(x1.sum())", "0")
    assert again[0] < 1 * MB, again  # only the key travelled
    assert float(values[0]) == expected

    ok(k, "x1[123_456] = -1.0")  # same object, same id(), new content
    changed, values = pushed(k, "float(x1[123_456]), float(x1.sum())", "0")
    assert changed[0] > 100 * MB, changed
    assert values[0] == repr((-1.0, value(k, "float(x1.sum())")))


def test_four_nodes_cost_the_kernel_one_upload_and_hold_identical_bytes(k):
    ok(k, f"x4 = {ARRAY.format(seed=4)}")
    sent, values = pushed(k, NODE_DIGEST.format(name="x4"))
    assert sum(sent.values()) < 101 * MB, sent  # the payload crossed the kernel's link once
    assert sent[0] > 100 * MB, sent  # to the head...
    assert all(sent[n] < 1 * MB for n in (1, 2, 3)), sent  # ...the others fetched it from there
    kernel_digest = value(k, NODE_DIGEST.format(name="x4"))
    assert values == {n: repr(kernel_digest) for n in range(4)}


def test_nodes_on_this_machine_take_blobs_beside_ssh_and_over_it_when_told(k):
    ok(k, f"xd = {ARRAY.format(seed=11)}")
    sent, values = pushed(k, NODE_DIGEST.format(name="xd"), ssh_only=True)
    digest = value(k, NODE_DIGEST.format(name="xd"))
    assert values == {n: repr(digest) for n in range(4)}
    assert all(n < 1 * MB for n in sent.values()), sent  # into the head's relay, not SSH

    ok(k, "os.environ['SKYWARD_PUSH_OVER_SSH'] = '1'")
    try:
        ok(k, "xd[0] = 7.0")
        sent, values = pushed(k, NODE_DIGEST.format(name="xd"), ssh_only=True)
    finally:
        ok(k, "del os.environ['SKYWARD_PUSH_OVER_SSH']")
    digest = value(k, NODE_DIGEST.format(name="xd"))
    assert values == {n: repr(digest) for n in range(4)}
    assert sent[0] > 100 * MB and all(sent[n] < 1 * MB for n in (1, 2, 3)), sent


def test_files_put_and_synced_to_four_nodes_cross_the_kernels_link_once(k, tmp_path):
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(40 * MB))
    before = sent_per_node(k)
    result = ok(k, f"%skyward put {big}", timeout=300)
    text = result.text()
    after = sent_per_node(k)
    bars = [
        m["content"]["data"]["text/plain"]
        for _, m in result.messages
        if m["msg_type"] in ("display_data", "update_display_data")
    ]
    assert len(bars) >= 2 and "100%" not in bars[0] and "100%" in bars[-1], bars  # as SFTP
    sent = {n: after[n] - before[n] for n in after}
    assert sent[0] > 40 * MB and all(sent[n] < 1 * MB for n in (1, 2, 3)), sent
    assert "on 4 node(s) (40.0 MB sent)" in text, text
    digest = hashlib.sha256(big.read_bytes()).hexdigest()
    read = "%%skyward run\n__import__('hashlib').sha256(open('big.bin', 'rb').read()).hexdigest()"
    assert ok(k, read).values() == {n: repr(digest) for n in range(4)}

    data = tmp_path / "data"
    data.mkdir()
    (data / "small.txt").write_text("hello")
    (data / "run.sh").write_text("#!/bin/sh\n")
    (data / "run.sh").chmod(0o755)
    assert "8 file(s)" in ok(k, f"%skyward sync {data}").text()  # 2 files, 4 nodes
    assert "0 file(s), 0 B sent" in ok(k, f"%skyward sync {data}").text()
    landed = ok(
        k,
        "%%skyward run\nimport os\n"
        "open('data/small.txt').read(), oct(os.stat('data/run.sh').st_mode & 0o777)",
    )
    assert landed.values() == {n: repr(("hello", "0o755")) for n in range(4)}
    failed = k.execute(f"%skyward put {data / 'run.sh'} data/small.txt/inside")
    assert not failed.ok and "data/small.txt/inside: [Errno 17] File exists" in failed.text()


def test_a_node_that_cannot_reach_the_head_gets_the_data_from_the_kernel(k):
    # Node 3's route to the head is down: it is told to fetch from an address no packet
    # reaches (TEST-NET-1), as a firewall between the nodes would make it.
    ok(
        k,
        "from skyward.jupyter.extension import session as _session\n"
        "_agents = {n.node: _session().agents.clients[n.instance.id] "
        "for n in _session().ready_cluster().node_instances()}\n"
        "_real_fetch = type(_agents[3]).fetch\n"
        "async def _cut_off(payload, host, port, token):\n"
        "    return await _real_fetch(_agents[3], payload, '192.0.2.1', port, token)\n"
        "_agents[3].fetch = _cut_off",
    )
    ok(k, f"xc = {ARRAY.format(seed=7)}")
    sent, values = pushed(k, NODE_DIGEST.format(name="xc"))
    kernel_digest = value(k, NODE_DIGEST.format(name="xc"))
    assert values == {n: repr(kernel_digest) for n in range(4)}
    assert sent[3] > 100 * MB and sent[0] > 100 * MB, sent  # node 3 got it straight
    assert sent[1] < 1 * MB and sent[2] < 1 * MB, sent
    assert value(k, "_agents[3].reaches_head") is False

    ok(k, "xc[0] = 5.0")  # from now on node 3 is sent blobs directly, without trying
    sent, values = pushed(k, "float(xc[0])")
    assert values == {n: "5.0" for n in range(4)}
    assert sent[3] > 100 * MB and sent[1] < 1 * MB, sent


def test_what_a_node_received_outlives_a_crash_of_its_worker(k):
    ok(k, f"xw = {ARRAY.format(seed=9)}")
    first, _ = pushed(k, "float(xw[1])", "1")
    assert first[1] > 100 * MB, first
    crashed = k.execute("%%skyward run --on 1 --no-push\nimport os; os._exit(3)", timeout=60)
    assert not crashed.ok and "RemoteCrash" in crashed.text()
    # the fresh worker has no variables, but the supervisor kept the blob: only the key goes
    again, values = pushed(k, "float(xw[1])", "1")
    assert again[1] < 1 * MB, again
    assert values == {1: repr(value(k, "float(xw[1])"))}
