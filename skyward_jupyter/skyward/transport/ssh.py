"""Connecting to instances over SSH with the cluster key and the pinned host key."""

from __future__ import annotations

import asyncio
import time

import asyncssh

from ..errors import TransportError
from ..events import NodeInstance

__all__ = ["connect"]

# AES-GCM first: with AES-NI it moves bulk data (pushed variables) several times faster
# than chacha20-poly1305, asyncssh's default; the rest stay as fallbacks.
CIPHERS = (
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
    "aes128-ctr",
    "aes256-ctr",
)


async def connect(
    node: NodeInstance, host_public_key: str, timeout: float = 120.0
) -> asyncssh.SSHClientConnection:
    """Connect to ``node``, retrying with backoff until its SSH server answers.

    The host key must be ``host_public_key``; any other key fails at once, since a
    changed host key is never a reason to wait.
    """
    instance = node.instance
    trusted = asyncssh.import_public_key(host_public_key)
    deadline = time.monotonic() + timeout
    delay = 0.05
    last: Exception | None = None
    while True:
        try:
            return await asyncssh.connect(
                instance.ip,
                instance.ssh_port,
                username=node.ssh_user,
                client_keys=[node.ssh_key_path],
                password=node.ssh_password,
                known_hosts=([trusted], [], []),
                agent_path=None,
                connect_timeout=min(30.0, max(1.0, deadline - time.monotonic())),
                encryption_algs=CIPHERS,
                keepalive_interval=15,
                keepalive_count_max=4,
            )
        except asyncssh.HostKeyNotVerifiable as exc:
            raise TransportError(
                f"node {node.node} ({instance.ip}:{instance.ssh_port}) presented an "
                f"unexpected host key: refusing to connect"
            ) from exc
        except asyncssh.PermissionDenied as exc:
            raise TransportError(
                f"node {node.node}: the cluster key was refused by {instance.ip}"
            ) from exc
        except (OSError, asyncssh.Error) as exc:
            last = exc
        if time.monotonic() + delay > deadline:
            raise TransportError(
                f"node {node.node}: no SSH answer from {instance.ip}:{instance.ssh_port} "
                f"within {timeout:.0f} s ({last})"
            )
        await asyncio.sleep(delay)
        delay = min(delay * 2, 2.0)
