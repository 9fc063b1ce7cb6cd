"""The ledger's cluster records: every shared resource a cluster made, noted before it
was made, kept with unknown fields (a newer version's), owned by a kernel like entries."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from skyward.core.ledger import KernelIdentity, Ledger, cluster_key
from skyward.errors import LedgerError
from skyward.model import ClusterSpec


def _dead_kernel() -> KernelIdentity:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    identity = KernelIdentity.of(child.pid)
    child.wait()
    return identity


def test_resources_are_noted_in_order_once_each(tmp_path):
    ledger = Ledger(tmp_path / "ledger.json")
    ledger.begin_cluster("gcp", "sky-1", ClusterSpec("gcp"), keep=False, key_path="/k")
    for kind, rid in [("zone", "z-a"), ("firewall", "skyward-sky-1"), ("zone", "z-a"),
                      ("firewall", "skyward-sky-1-internal")]:  # fmt: skip
        ledger.note_resource("sky-1", kind, rid)
    record = ledger.cluster("sky-1")
    assert record is not None and record.provider == "gcp" and record.key_path == "/k"
    assert record.resources == {
        "zone": ["z-a"],
        "firewall": ["skyward-sky-1", "skyward-sky-1-internal"],
    }
    assert record.kernel == KernelIdentity.current()
    assert ledger.entries() == [] and ledger.notices() == []
    ledger.forget_cluster("sky-1")
    assert ledger.cluster("sky-1") is None and ledger.clusters() == []


def test_a_note_without_a_cluster_record_is_refused(tmp_path):
    with pytest.raises(LedgerError, match="no record of cluster sky-2"):
        Ledger(tmp_path / "ledger.json").note_resource("sky-2", "key-pair", "skyward-sky-2")


def test_unknown_fields_of_a_cluster_record_are_kept_and_ignored(tmp_path):
    path = tmp_path / "ledger.json"
    ledger = Ledger(path)
    ledger.begin_cluster("aws", "sky-3", ClusterSpec("aws"), keep=True, key_path="")
    stored = json.loads(path.read_text())
    stored[cluster_key("sky-3")]["from_the_future"] = {"x": 1}
    path.write_text(json.dumps(stored))
    ledger.note_resource("sky-3", "key-pair", "skyward-sky-3")
    record = ledger.cluster("sky-3")
    assert (
        record is not None and record.keep and record.resources == {"key-pair": ["skyward-sky-3"]}
    )
    assert json.loads(path.read_text())[cluster_key("sky-3")]["from_the_future"] == {"x": 1}
    assert ledger.notices() == []


def test_leftovers_are_dead_kernels_clusters_without_instances(tmp_path):
    path = tmp_path / "ledger.json"
    ledger = Ledger(path)
    spec = ClusterSpec("aws")
    for cluster_id in ("sky-dead", "sky-dead-with-instance", "sky-alive"):
        ledger.begin_cluster("aws", cluster_id, spec, keep=False, key_path="")
    key = ledger.begin("aws", "sky-dead-with-instance", 0, spec)
    dead = _dead_kernel()
    stored = json.loads(path.read_text())
    for name in (cluster_key("sky-dead"), cluster_key("sky-dead-with-instance"), key):
        stored[name].update(kernel_pid=dead.pid, kernel_started=dead.started)
    path.write_text(json.dumps(stored))
    assert [c.cluster_id for c in ledger.leftovers()] == ["sky-dead"]
    ledger.adopt([cluster_key("sky-dead")])  # attach makes a cluster this kernel's
    assert ledger.leftovers() == []
