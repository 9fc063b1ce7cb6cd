"""A kernel on the nodes' machine sends blobs straight into the head's relay (no SSH).

The relay and the store are the node's real ones, on loopback; the uploader is the
kernel's, on an asyncio loop, as in a session.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import socket
import threading

import numpy as np
import pytest
from skyward.agent.blobs import BlobError, BlobStore
from skyward.agent.relay import RelayServer, fetch
from skyward.errors import AgentError
from skyward.payload import make_payload
from skyward.transport.upload import Uploader, direct_allowed

TOKEN = "cluster-token"


def payload_of(value):
    buffers: list = []
    stream = pickle.dumps(value, protocol=5, buffer_callback=buffers.append)
    return make_payload("x", stream, buffers)


def blob_bytes(payload) -> bytes:
    return b"".join(bytes(piece) for _, piece in payload.pieces(1 << 20))


@pytest.fixture
def head(tmp_path):
    store = BlobStore(str(tmp_path / "head"))
    relay = RelayServer(store, "127.0.0.1", TOKEN)
    yield store, relay
    relay.close()


def test_blobs_go_into_the_relay_on_one_kept_connection(head, tmp_path):
    store, relay = head
    first = payload_of(np.arange(300_000, dtype=np.float64))  # a stream and a buffer
    second = payload_of(os.urandom(200_000))
    uploader = Uploader(0)

    async def main():
        await uploader.send(first, "127.0.0.1", relay.port, TOKEN, digest=False)
        kept = uploader._sock
        await uploader.send(second, "127.0.0.1", relay.port, TOKEN, digest=False)
        assert uploader._sock is kept
        uploader.close()

    asyncio.run(main())
    for payload in (first, second):
        assert (tmp_path / "head" / payload.key).read_bytes() == blob_bytes(payload)
    assert uploader.bytes_sent == first.size + second.size and not uploader.failed


def test_other_nodes_fetch_a_blob_while_the_kernel_still_uploads_it(head, tmp_path):
    store, relay = head
    payload = payload_of(os.urandom(30_000_000))
    node = BlobStore(str(tmp_path / "node"))
    errors: list[BaseException] = []

    def fetcher() -> None:
        try:
            fetch(node, payload.key, payload.size, "127.0.0.1", relay.port, TOKEN)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=fetcher)
    thread.start()  # it follows the blob from the first piece the kernel sends
    uploader = Uploader(0)

    async def main():
        await uploader.send(payload, "127.0.0.1", relay.port, TOKEN, digest=True)
        uploader.close()

    asyncio.run(main())
    thread.join(30)
    assert not errors, errors
    assert (tmp_path / "node" / payload.key).read_bytes() == blob_bytes(payload)


def test_a_wrong_token_keeps_nothing_and_sends_later_blobs_over_ssh(head, tmp_path):
    store, relay = head
    payload = payload_of(os.urandom(100_000))
    uploader = Uploader(2)
    with pytest.raises(AgentError, match="node 2: its relay did not keep a blob: wrong token"):
        asyncio.run(uploader.send(payload, "127.0.0.1", relay.port, "guess", digest=False))
    assert uploader.failed and not store.has(payload.key)
    assert [n for n in os.listdir(tmp_path / "head")] == []


def test_a_relay_that_is_gone_fails_the_upload(tmp_path):
    store = BlobStore(str(tmp_path))
    relay = RelayServer(store, "127.0.0.1", TOKEN)
    port = relay.port
    relay.close()
    uploader = Uploader(1)
    with pytest.raises(AgentError, match="node 1: sending a blob to 127.0.0.1"):
        asyncio.run(uploader.send(payload_of(b"x" * 100), "127.0.0.1", port, TOKEN, False))
    assert uploader.failed


def test_a_short_upload_is_not_kept(head, tmp_path):
    store, relay = head
    with socket.create_connection(("127.0.0.1", relay.port)) as sock:
        sock.sendall(b"SKYWARD-PUT %s abc123 1000 0\n" % TOKEN.encode())
        sock.sendall(b"y" * 10)
    for _ in range(100):
        if not any(name.startswith(".") for name in os.listdir(tmp_path / "head")):
            break
        threading.Event().wait(0.02)
    assert not store.has("abc123") and os.listdir(tmp_path / "head") == []
    with pytest.raises(BlobError):
        fetch(BlobStore(str(tmp_path / "n")), "abc123", 1000, "127.0.0.1", relay.port, TOKEN)


def test_only_a_loopback_address_skips_ssh(monkeypatch):
    monkeypatch.delenv("SKYWARD_PUSH_OVER_SSH", raising=False)
    assert direct_allowed("127.0.0.5") and direct_allowed("::1")
    assert not direct_allowed("10.0.0.5") and not direct_allowed("node-0.internal")
    monkeypatch.setenv("SKYWARD_PUSH_OVER_SSH", "1")
    assert not direct_allowed("127.0.0.5")


def test_an_upload_cut_by_an_interrupt_is_dropped_and_the_next_one_is_whole(head, tmp_path):
    store, relay = head
    cut = payload_of(np.zeros(200_000_000 // 8))
    whole = payload_of(os.urandom(1_000_000))
    uploader = Uploader(0)

    async def main():
        task = asyncio.ensure_future(
            uploader.send(cut, "127.0.0.1", relay.port, TOKEN, digest=False)
        )
        for _ in range(10_000):  # until the relay has begun to take it
            if any(n.startswith(".") for n in os.listdir(tmp_path / "head")):
                break
            await asyncio.sleep(0.001)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await uploader.send(whole, "127.0.0.1", relay.port, TOKEN, digest=False)
        uploader.close()

    asyncio.run(main())
    assert not store.has(cut.key) and not uploader.failed
    assert (tmp_path / "head" / whole.key).read_bytes() == blob_bytes(whole)
