"""Host-key rotation: the key that travelled in the launch request is retired at once.

The client generates each instance's host key before the instance exists and hands it
over at launch (user data, metadata, a pod's environment), so the first connection is
pinned, never trusted on first use. But that copy stays readable in the cloud's metadata
for the instance's whole life. So right after the first pinned connection the node makes
a fresh key (``ssh-keygen`` on the node: the private half never leaves it), its SSH
server takes it up (sshd on SIGHUP; the container node on SIGUSR1), and the client pins
the new public key, checked by a second connection before it is recorded.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncssh

from ..errors import TransportError
from ..events import NodeInstance
from .ssh import connect

__all__ = ["ROTATE_SCRIPT", "confirm_host_key"]

ROTATE_SCRIPT = r"""set -eu
umask 077
key=""
for f in "${SKYWARD_HOST_KEY_FILE:-}" /etc/skyward/ssh_host_key /etc/ssh/ssh_host_ed25519_key; do
  if [ -n "$f" ] && [ -f "$f" ]; then key=$f; break; fi
done
[ -n "$key" ] || { echo "no host key file found on the node" >&2; exit 3; }
command -v ssh-keygen >/dev/null || { echo "no ssh-keygen on the node" >&2; exit 4; }
sudo=""
[ -w "$key" ] || sudo="sudo -n"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
ssh-keygen -q -t ed25519 -N '' -C skyward-rotated -f "$tmp/key"
$sudo cp "$tmp/key" "$key.next"
$sudo chmod 600 "$key.next"
$sudo mv -f "$key.next" "$key"
if [ -e "$key.pub" ]; then $sudo cp "$tmp/key.pub" "$key.pub"; fi
if [ -n "${SKYWARD_NODE_PID:-}" ] && [ -n "${SKYWARD_HOST_KEY_FILE:-}" ]; then
  kill -USR1 "$SKYWARD_NODE_PID"
elif [ -f /run/sshd.pid ]; then
  $sudo kill -HUP "$(cat /run/sshd.pid)"
elif command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet ssh 2>/dev/null; then
  $sudo systemctl reload ssh
elif command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet sshd 2>/dev/null; then
  $sudo systemctl reload sshd
else
  $sudo pkill -HUP -x sshd
fi
echo "SKYWARD_HOST_KEY=$(cat "$tmp/key.pub")"
"""


async def confirm_host_key(node: NodeInstance, public_key: str, tries: int = 40) -> None:
    """Connect once pinning ``public_key`` (the server may take a moment to reload)."""
    asyncssh.import_public_key(public_key)  # a malformed answer fails here, not later
    last: Exception | None = None
    for _ in range(tries):
        try:
            probe: Any = await connect(node, public_key, timeout=10.0)
        except TransportError as exc:
            last = exc
            await asyncio.sleep(0.05)
            continue
        probe.close()
        return
    raise TransportError(f"node {node.node}: the rotated host key was not taken up ({last})")
