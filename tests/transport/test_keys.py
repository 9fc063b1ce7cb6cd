"""Cluster keys: made private, and deleted only inside our own keys folder."""

from __future__ import annotations

import asyncio
import os

import pytest
from skyward.transport.keys import cluster_keys_dir, forget_cluster_keys, make_cluster_keys


@pytest.mark.parametrize("cluster_id", ["..", "../other", "ABSOLUTE", "", "sky-1/../../x"])
async def test_a_cluster_id_from_a_damaged_ledger_never_reaches_outside(
    tmp_path, monkeypatch, cluster_id
):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    precious = tmp_path / "data" / "skyward" / "other"
    precious.mkdir(parents=True)
    (precious / "file").write_text("mine")
    cluster_id = str(precious) if cluster_id == "ABSOLUTE" else cluster_id
    with pytest.raises(ValueError):
        cluster_keys_dir(cluster_id)
    await forget_cluster_keys(cluster_id)
    assert (precious / "file").read_text() == "mine"


def test_forget_removes_only_that_cluster(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    one = asyncio.run(make_cluster_keys("sky-00000001"))
    two = asyncio.run(make_cluster_keys("sky-00000002"))
    asyncio.run(forget_cluster_keys("sky-00000001"))
    assert not os.path.exists(one.private_key_path)
    assert not cluster_keys_dir("sky-00000001").exists()
    assert os.path.exists(two.private_key_path)
