"""Shared fixtures: an isolated data directory per test session, and leak checks."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def _isolated_data_home():
    """Keys and instance folders go to a temporary XDG_DATA_HOME, kernels inherit it."""
    old = os.environ.get("XDG_DATA_HOME")
    with tempfile.TemporaryDirectory(prefix="skyward-test-") as tmp:
        os.environ["XDG_DATA_HOME"] = tmp
        yield Path(tmp)
    if old is None:
        os.environ.pop("XDG_DATA_HOME", None)
    else:
        os.environ["XDG_DATA_HOME"] = old
