"""What the SDK drivers share (standard library only: they run in the SDKs' own venvs)."""

from __future__ import annotations

import json
import socket
import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def ssh_banner(host: str, port: int, timeout: float = 10.0) -> str:
    """The first line an SSH server at ``host:port`` sends (``SSH-2.0-…``)."""
    with socket.create_connection((host, int(port)), timeout=timeout) as conn:
        conn.settimeout(timeout)
        line = b""
        while not line.endswith(b"\n") and len(line) < 256:
            chunk = conn.recv(1)
            if not chunk:
                break
            line += chunk
    return line.decode(errors="replace").strip()


def wait_for(check: Callable[[], T | None], what: str, timeout: float = 60.0) -> T:
    """Call ``check`` until it returns non-None; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found is not None:
            return found
        if time.monotonic() > deadline:
            raise SystemExit(f"{what}: not done within {timeout:.0f} s")
        time.sleep(0.3)


def report(result: dict[str, Any]) -> None:
    """Print the driver's report: one JSON line, the last thing it prints."""
    sys.stdout.write(json.dumps(result) + "\n")
