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

from .kernel import Kernel, loaded, ok

pytestmark = pytest.mark.slow


def _up(k: Kernel) -> Path:
    result = ok(k, "%skyward up --provider container --nodes 1", timeout=180)
    cluster = re.search(r"cluster (sky-\w+) ready", result.text()).group(1)
    return Path(os.environ["XDG_DATA_HOME"]) / "skyward" / "keys" / cluster


def test_down_deletes_the_cluster_keys():
    with loaded() as k:
        folder = _up(k)
        assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
        assert stat.S_IMODE(os.stat(folder / "id_ed25519").st_mode) == 0o600
        ok(k, "%skyward down", timeout=120)
        assert not folder.exists()


def test_unload_deletes_the_cluster_keys():
    with loaded() as k:
        folder = _up(k)
        ok(k, "%unload_ext skyward", timeout=120)
        assert not folder.exists()


def test_keys_a_dead_kernel_left_go_with_its_orphans():
    with loaded() as k:
        folder = _up(k)
    # what it could not destroy at exit stays in the ledger, for the next kernel's cleanup
    with loaded():
        deadline = time.monotonic() + 30
        while folder.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not folder.exists()
