"""Real local machines behind simulated cloud instances (used by the aws and gcp simulators).

Each simulated instance is a node of the container provider's process runtime listening on
port 22 at its own 127.0.0.x address, started with the host key and the authorized key
that the provider put in the instance's user data or startup script. So the client's
SSH, host-key pinning, bootstrap and agent really run against what the provider launched.
"""

from __future__ import annotations

import asyncio
import re
import tempfile
import threading
from pathlib import Path
from typing import Any

from skyward.core.provider import ClusterKeys, LaunchRequest
from skyward.model import ClusterSpec
from skyward.providers.container import ContainerProvider

__all__ = ["BackingNodes", "host_key_from"]

_HOST_KEY = re.compile(
    r"-----BEGIN OPENSSH PRIVATE KEY-----(.*?)-----END OPENSSH PRIVATE KEY-----", re.S
)


def host_key_from(text: str) -> str:
    """The OpenSSH private key inside a user-data text (indented or not)."""
    match = _HOST_KEY.search(text)
    if match is None:
        raise ValueError("no host key in the user data")
    body = "".join(line.strip() for line in match.group(1).splitlines())
    lines = [body[i : i + 70] for i in range(0, len(body), 70)]
    return "\n".join(
        ["-----BEGIN OPENSSH PRIVATE KEY-----", *lines, "-----END OPENSSH PRIVATE KEY-----", ""]
    )


class BackingNodes:
    """Starts and kills the local nodes behind simulated instances (own loop thread)."""

    def __init__(self, base_dir: str | Path | None = None) -> None:
        self._tmp = None if base_dir else tempfile.TemporaryDirectory(prefix="skyward-sim-")
        folder = Path(base_dir) if base_dir else Path(self._tmp.name)  # type: ignore[union-attr]
        self.provider = ContainerProvider(runtime="process", base_dir=folder, ssh_port=22)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._context: Any = None
        self._lock = threading.Lock()
        self.nodes: dict[str, str] = {}  # cloud instance id -> local instance id
        self.launched: dict[str, str] = {}  # cloud instance id -> host public key given

    def _run(self, coro: Any, timeout: float = 60.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def start(self, cloud_id: str, host_key: str, authorized_key: str) -> str:
        """Start the node for ``cloud_id``; return its address once it listens on 22."""
        with self._lock:
            if self._context is None:
                keys = ClusterKeys("", "")
                self._context = self._run(
                    self.provider.prepare("sim", ClusterSpec("container"), keys)
                )
        request = LaunchRequest(
            "sim", len(self.nodes), ClusterSpec("container"),
            ClusterKeys("", authorized_key.strip()), host_key, "",
        )  # fmt: skip
        local = self._run(self.provider.launch(self._context, request))
        with self._lock:
            self.nodes[cloud_id] = local
        instance = self._run(self.provider.wait_running(self._context, local, 30.0))
        return str(instance.ip)

    def stop(self, cloud_id: str) -> None:
        """Kill the node behind ``cloud_id`` (if any), like a machine powering off."""
        with self._lock:
            local = self.nodes.pop(cloud_id, None)
        if local is not None:
            self._run(self.provider.destroy(self._context, local))

    def alive(self) -> list[str]:
        """Cloud ids whose node still runs."""
        return list(self.nodes)

    def close(self) -> None:
        for cloud_id in list(self.nodes):
            self.stop(cloud_id)
        if self._context is not None:
            self._run(self.provider.teardown(self._context))
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        if self._tmp is not None:
            self._tmp.cleanup()
