"""Pushed variables: pickled with their buffers out of band, named by their content."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from skyward.agent.blobs import BlobStore
from skyward.agent.variables import load_blob
from skyward.jupyter.variables import pickle_push
from skyward.payload import ALIGN, INLINE


def push(**values):
    return asyncio.run(pickle_push(values))


def stored(tmp_path, payload):
    """The payload written into a node's store piece by piece, loaded as the worker does."""
    store = BlobStore(str(tmp_path))
    for offset, piece in payload.pieces(1 << 20):
        store.write(payload.key, payload.size, offset, piece)
    store.finish(payload.key)
    return store.path(payload.key), load_blob(store.path(payload.key), payload.reference()["parts"])


def test_an_array_travels_out_of_band_without_a_copy():
    array = np.arange(1_000_000, dtype=np.float64)
    payload = push(a=array)["a"]
    assert len(payload.parts) == 2 and not payload.inline
    assert np.shares_memory(np.frombuffer(payload.parts[1], dtype=np.float64), array)
    assert payload.layout[1][0] % ALIGN == 0
    assert payload.size >= array.nbytes


def test_the_key_follows_the_content_not_the_object():
    array = np.zeros(200_000)
    first = push(a=array)["a"].key
    assert push(a=array.copy())["a"].key == first  # another object, same bytes
    array[123] = 1.0  # same object, new bytes
    assert push(a=array)["a"].key != first
    assert push(b=[1, 2, 3])["b"].inline and push(b=[1, 2, 3])["b"].size <= INLINE


def test_a_blob_loads_writable_and_a_write_never_reaches_the_store(tmp_path):
    array = np.random.default_rng(0).random(300_000)
    path, loaded = stored(tmp_path, push(a=array)["a"])
    assert np.array_equal(loaded, array) and loaded.flags.writeable
    loaded[:] = -1.0
    _, again = stored(tmp_path / "again", push(a=array)["a"])
    assert np.array_equal(again, array)
    assert np.array_equal(load_blob(path, push(a=array)["a"].reference()["parts"]), array)


def test_a_torch_tensor_travels_out_of_band(tmp_path):
    torch = pytest.importorskip("torch")
    tensor = torch.arange(500_000, dtype=torch.float32)
    payload = push(t=tensor)["t"]
    assert len(payload.parts) == 2 and payload.parts[1].nbytes == tensor.numel() * 4
    _, loaded = stored(tmp_path, payload)
    assert isinstance(loaded, torch.Tensor) and torch.equal(loaded, tensor)
    grad = torch.ones(100_000, requires_grad=True)  # pickled as torch does
    assert len(push(g=grad)["g"].parts) == 1
