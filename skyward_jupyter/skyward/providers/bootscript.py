"""The first-boot script that pins an instance's SSH host key and authorizes our key.

Why: the client generates each instance's host key before the instance exists
(``LaunchRequest.host_key``), so it can pin it and never trust on first use. Providers that
run a script (or a command) at first boot hand the instance this script, which installs
that key as sshd's ed25519 host key (the only host key left, so no other can be offered),
authorizes the cluster's public key for root, and (re)starts sshd.

The script carries a private key: providers keep it in the instance's configuration or in
a named startup script, which skyward deletes with the cluster. Its markers
(:data:`HOST_KEY_MARKER`, :data:`AUTHORIZED_MARKER`) are stable so tests can read them.
"""

from __future__ import annotations

import base64
import re
import shlex

__all__ = ["AUTHORIZED_MARKER", "HOST_KEY_MARKER", "boot_script", "docker_command", "encode"]

HOST_KEY_MARKER = "SKYWARD_HOST_KEY"
AUTHORIZED_MARKER = "# skyward-authorized-key"
_KEY_LINE = re.compile(r"^[A-Za-z0-9@.+/=\- ]+$")


def boot_script(cluster_id: str, node_id: int, host_key: str, public_key: str) -> str:
    """A bash script (run as root) that installs ``host_key`` and authorizes ``public_key``."""
    private = host_key.strip()
    public = public_key.strip()
    if HOST_KEY_MARKER in private or "\n" in public or not _KEY_LINE.match(public):
        raise ValueError("unexpected characters in an SSH key")
    return f"""#!/bin/bash
# skyward node boot: cluster {cluster_id} node {node_id}
set -eu
umask 077
mkdir -p /etc/ssh /root/.ssh /run/sshd
rm -f /etc/ssh/ssh_host_*_key /etc/ssh/ssh_host_*_key.pub
cat > /etc/ssh/ssh_host_ed25519_key <<'{HOST_KEY_MARKER}'
{private}
{HOST_KEY_MARKER}
chmod 600 /etc/ssh/ssh_host_ed25519_key
ssh-keygen -y -f /etc/ssh/ssh_host_ed25519_key > /etc/ssh/ssh_host_ed25519_key.pub || true
KEY={shlex.quote(public)}  {AUTHORIZED_MARKER}
touch /root/.ssh/authorized_keys
grep -qxF "$KEY" /root/.ssh/authorized_keys || echo "$KEY" >> /root/.ssh/authorized_keys
chmod 700 /root/.ssh && chmod 600 /root/.ssh/authorized_keys
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet ssh 2>/dev/null; then
  systemctl restart ssh
elif command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet sshd 2>/dev/null; then
  systemctl restart sshd
elif pgrep -x sshd >/dev/null 2>&1; then
  pkill -HUP -x sshd || true
fi
"""


def docker_command(env_name: str, then: str) -> str:
    """A container start command: run the boot script carried (base64) in ``env_name``,
    then ``then`` (the image's own start script, which starts sshd)."""
    return f"bash -c 'echo \"${env_name}\" | base64 -d | bash; exec {then}'"


def encode(script: str) -> str:
    """The script as one base64 line, to travel in an environment variable."""
    return base64.b64encode(script.encode()).decode()
