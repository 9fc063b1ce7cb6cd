"""The node's blob store and the relay between nodes, with real files and real sockets."""

from __future__ import annotations

import hashlib
import os
import threading
import time

import pytest
from skyward.agent import blobs
from skyward.agent.blobs import BlobError, BlobStore
from skyward.agent.relay import RelayServer, fetch

TOKEN = "cluster-token"


def put(store: BlobStore, key: str, data: bytes, piece: int = 1000) -> None:
    for offset in range(0, len(data), piece):
        store.write(key, len(data), offset, data[offset : offset + piece])
    store.finish(key)


def test_a_blob_not_relayed_is_hashed_only_when_asked(tmp_path, monkeypatch):
    made = []
    monkeypatch.setattr(blobs, "new_digest", lambda: made.append(1) or hashlib.sha256())
    store = BlobStore(str(tmp_path))
    data = os.urandom(10_000)
    for offset in range(0, len(data), 1000):
        store.write("d4", len(data), offset, data[offset : offset + 1000], digest=False)
    store.finish("d4")
    assert made == [] and (tmp_path / "d4").read_bytes() == data
    assert store.digest("d4") == hashlib.sha256(data).hexdigest() and made == [1]
    assert store.final_digest("d4", None, 1.0) == hashlib.sha256(data).hexdigest()


def test_a_blob_is_kept_whole_or_not_at_all(tmp_path):
    store = BlobStore(str(tmp_path))
    data = os.urandom(10_000)
    put(store, "a1", data)
    assert store.has("a1") and (tmp_path / "a1").read_bytes() == data
    assert store.digest("a1") == hashlib.sha256(data).hexdigest()

    store.write("b2", 100, 0, b"x" * 40)
    with pytest.raises(BlobError, match="40 of 100"):
        store.finish("b2")
    assert not store.has("b2")
    assert sorted(os.listdir(tmp_path)) == ["a1"]  # no partial file left behind

    store.write("c3", 100, 0, b"x" * 40)
    with pytest.raises(BlobError, match="out of order"):
        store.write("c3", 100, 50, b"y" * 10)


def test_past_its_cap_the_least_recently_used_unpinned_blobs_go(tmp_path):
    store = BlobStore(str(tmp_path), cap=2500)
    for key in ("old", "pinned", "recent"):
        put(store, key, os.urandom(1000))
        time.sleep(0.01)
    store.pin(["pinned"])
    assert store.missing(["old", "pinned", "recent"]) == ["old"]  # 3000 > 2500: oldest out
    store.pin(["recent"])
    store.unpin(["recent"])
    put(store, "new", os.urandom(1000))
    assert store.missing(["pinned", "recent", "new"]) == ["recent"]  # pinned survives
    assert BlobStore(str(tmp_path)).missing(["pinned", "new"]) == []  # a new agent finds them


def test_the_relay_serves_the_cluster_only_and_checks_what_arrives(tmp_path):
    head = BlobStore(str(tmp_path / "head"))
    data = os.urandom(3_000_000)
    put(head, "k1", data, piece=1 << 20)
    relay = RelayServer(head, "127.0.0.1", TOKEN)
    node = BlobStore(str(tmp_path / "node"))
    try:
        with pytest.raises(BlobError, match="wrong token"):
            fetch(node, "k1", len(data), "127.0.0.1", relay.port, "guess")
        fetch(node, "k1", len(data), "127.0.0.1", relay.port, TOKEN)
        assert (tmp_path / "node" / "k1").read_bytes() == data

        (tmp_path / "head" / "k1").write_bytes(data[:-1] + b"!")  # the head's copy rots
        other = BlobStore(str(tmp_path / "other"))
        with pytest.raises(BlobError, match="sha256 does not match"):
            fetch(other, "k1", len(data), "127.0.0.1", relay.port, TOKEN)
        assert not other.has("k1") and os.listdir(tmp_path / "other") == []
    finally:
        relay.close()


def test_a_blob_is_relayed_while_it_still_arrives_at_the_head(tmp_path):
    head = BlobStore(str(tmp_path / "head"))
    relay = RelayServer(head, "127.0.0.1", TOKEN)
    node = BlobStore(str(tmp_path / "node"))
    data = os.urandom(2_000_000)
    errors: list[BaseException] = []

    def fetcher() -> None:
        try:
            fetch(node, "k2", len(data), "127.0.0.1", relay.port, TOKEN)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=fetcher)
    thread.start()  # before the head has the first byte
    try:
        time.sleep(0.2)
        for offset in range(0, len(data), 500_000):
            head.write("k2", len(data), offset, data[offset : offset + 500_000])
            time.sleep(0.05)
        assert thread.is_alive()  # it waits for the head's last piece and digest
        head.finish("k2")
        thread.join(10)
        assert not errors and (tmp_path / "node" / "k2").read_bytes() == data
    finally:
        relay.close()


def test_an_unreachable_head_is_reported_quickly(tmp_path):
    node = BlobStore(str(tmp_path))
    began = time.monotonic()
    with pytest.raises(BlobError, match="cannot reach the head"):
        fetch(node, "k3", 10, "192.0.2.1", 9, TOKEN, timeout=0.5)
    assert time.monotonic() - began < 2.0
