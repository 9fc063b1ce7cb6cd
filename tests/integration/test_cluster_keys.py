"""A cluster's SSH key lives only as long as the cluster: made private at ``up``, gone
once ``down``, ``%unload_ext`` or the next kernel's orphan cleanup has confirmed that
every instance is destroyed."""

from __future__ import annotations

import os
import re
import stat
import time
from pathlib import Path

import pytest

from .kernel import Kernel

pytestmark = pytest.mark.slow


def _up(k: Kernel) -> Path:
    result = k.execute("%skyward up --provider container --nodes 1", timeout=180)
    assert result.ok, result.text()
    cluster = re.search(r"cluster (sky-\w+) ready", result.text()).group(1)
    return Path(os.environ["XDG_DATA_HOME"]) / "skyward" / "keys" / cluster


def test_down_deletes_the_cluster_keys():
    k = Kernel()
    try:
        assert k.execute("%load_ext skyward").ok
        folder = _up(k)
        assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
        assert stat.S_IMODE(os.stat(folder / "id_ed25519").st_mode) == 0o600
        assert k.execute("%skyward down", timeout=120).ok
        assert not folder.exists()
    finally:
        k.shutdown()


def test_unload_deletes_the_cluster_keys():
    k = Kernel()
    try:
        assert k.execute("%load_ext skyward").ok
        folder = _up(k)
        assert k.execute("%unload_ext skyward", timeout=120).ok
        assert not folder.exists()
    finally:
        k.shutdown()


def test_keys_a_dead_kernel_left_go_with_its_orphans():
    k = Kernel()
    try:
        assert k.execute("%load_ext skyward").ok
        folder = _up(k)
    finally:
        k.shutdown()  # what it could not destroy at exit stays in the ledger
    nxt = Kernel()
    try:
        assert nxt.execute("%load_ext skyward").ok
        deadline = time.monotonic() + 30
        while folder.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not folder.exists()
    finally:
        nxt.shutdown()
