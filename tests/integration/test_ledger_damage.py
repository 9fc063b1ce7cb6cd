"""A damaged ledger, met by a real kernel: ``%load_ext skyward`` works, the damaged file
is kept aside, the user is told (at load and in ``%skyward status``), and no entry that
could be read is lost; a newer version's fields are kept and ignored."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from skyward.core.ledger import KernelIdentity, Ledger
from skyward.model import ClusterSpec

from .kernel import Kernel

pytestmark = pytest.mark.slow

ALIVE = KernelIdentity.current()  # this test process: its entries are nobody's orphans
DEAD = KernelIdentity(os.getpid(), "1")  # this pid, another start time: a gone kernel


def _record(ledger: Ledger, cluster: str, kernel: KernelIdentity, **fields) -> str:
    spec = ClusterSpec("container", keep=bool(fields.get("keep")))
    key = ledger.begin("container", cluster, 0, spec, **fields)
    ledger.update(
        key,
        instance_id=f"ctr-{cluster}-0-000000",
        kernel_pid=kernel.pid,
        kernel_started=kernel.started,
    )
    return key


def _kernel(data_home: Path) -> Kernel:
    return Kernel(env={**os.environ, "XDG_DATA_HOME": str(data_home)})


def _wait_until(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not predicate():
        time.sleep(0.1)
    return predicate()


def test_a_truncated_ledger_is_kept_aside_and_the_user_told(tmp_path):
    path = tmp_path / "skyward" / "ledger.json"
    ledger = Ledger(path)
    live = _record(ledger, "sky-000000a0", ALIVE)
    kept = _record(ledger, "sky-000000b0", DEAD, keep=True)
    _record(ledger, "sky-000000c0", ALIVE)  # stored last: the cut breaks it
    damaged = path.read_bytes()[:-5]
    path.write_bytes(damaged)
    k = _kernel(tmp_path)
    try:
        loaded = k.execute("%load_ext skyward")
        assert loaded.ok, loaded.text()
        status = k.execute("%skyward status").text()
    finally:
        k.shutdown()
    [aside] = sorted(path.parent.glob("ledger.json.corrupt-*"))
    assert aside.read_bytes() == damaged
    [line] = [t for t in loaded.text().splitlines() if "the ledger was damaged" in t]
    assert str(aside) in line
    assert "restored 2 entries (ctr-sky-000000a0-0-000000, ctr-sky-000000b0-0-000000)" in line
    assert "check by hand" in line and "ctr-sky-000000c0-0-000000" in line
    assert line in status.splitlines()
    assert "[--keep]" in loaded.text()  # the kept orphan, restored, is listed as before
    stored = json.loads(path.read_text())
    assert sorted(stored) == sorted([live, kept])  # no entry that could be read is lost


def test_a_newer_versions_fields_do_not_break_load_and_are_kept(tmp_path):
    path = tmp_path / "skyward" / "ledger.json"
    ledger = Ledger(path)
    live = _record(ledger, "sky-000000a0", ALIVE)
    orphan = _record(ledger, "sky-000000b0", DEAD)
    stored = json.loads(path.read_text())
    stored[live]["volume_ids"] = ["vol-0123"]  # written by a newer skyward
    stored[orphan]["firewall"] = {"name": "skyward-sky-000000b0"}
    path.write_text(json.dumps(stored))
    keys = tmp_path / "skyward" / "keys"
    for cluster in ("sky-000000a0", "sky-000000b0"):
        (keys / cluster).mkdir(parents=True)
        (keys / cluster / "id_ed25519").write_text("key")
    k = _kernel(tmp_path)
    try:
        loaded = k.execute("%load_ext skyward")
        assert loaded.ok, loaded.text()
        # The dead kernel's instance is cleaned up (the file is written again) ...
        assert _wait_until(lambda: orphan not in json.loads(path.read_text()), 30)
        status = k.execute("%skyward status").text()
    finally:
        k.shutdown()
    # ... and the live entry keeps the field this version does not know.
    assert json.loads(path.read_text())[live]["volume_ids"] == ["vol-0123"]
    assert not list(path.parent.glob("ledger.json.corrupt-*"))
    assert "damaged" not in loaded.text() + status
    # Its destruction confirmed, the orphan's keys are gone; the live cluster's are not.
    assert not (keys / "sky-000000b0").exists()
    assert (keys / "sky-000000a0" / "id_ed25519").exists()


def test_no_ledger_error_stops_load_ext(tmp_path):
    k = _kernel(tmp_path)
    try:
        broken = k.execute(
            "from skyward.core.ledger import Ledger\n"
            "def broken(self):\n"
            "    raise RuntimeError('the disk said no')\n"
            "Ledger.orphans = broken"
        )
        assert broken.ok
        loaded = k.execute("%load_ext skyward")
        assert loaded.ok, loaded.text()
        assert "skyward: cannot read the ledger" in loaded.text()
        assert "the disk said no" in loaded.text()
        assert k.execute("%skyward status").ok
    finally:
        k.shutdown()
