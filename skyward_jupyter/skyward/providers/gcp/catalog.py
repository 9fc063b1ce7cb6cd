"""What the Compute API does not tell us: prices, images, error codes, the startup script.

Prices live in the Cloud Billing Catalog API, which needs its own API enabled and returns
SKUs, not machine types; we ship approximate us-central1 list prices (USD per hour,
on-demand and spot) of the machine types we offer and use them in every zone, as an
estimate. Which types a zone has, and their GPUs, vCPUs and memory, come from Compute.
"""

from __future__ import annotations

__all__ = [
    "ATTACHABLE",
    "CAPACITY_CODES",
    "IMAGES",
    "PRICES",
    "gpu_name",
    "startup_script",
]

PRICES: dict[str, tuple[float, float]] = {
    # CPU only
    "e2-standard-4": (0.134, 0.040),
    "n2-standard-4": (0.194, 0.047),
    "n1-standard-8": (0.380, 0.080),  # host for attached T4s (ATTACHABLE)
    # A100 40 GB
    "a2-highgpu-1g": (3.673, 1.102),
    "a2-highgpu-2g": (7.347, 2.204),
    "a2-highgpu-4g": (14.694, 4.408),
    "a2-highgpu-8g": (29.387, 8.816),
    # A100 80 GB
    "a2-ultragpu-1g": (5.069, 1.521),
    "a2-ultragpu-2g": (10.138, 3.041),
    "a2-ultragpu-4g": (20.276, 6.083),
    "a2-ultragpu-8g": (40.552, 12.166),
    # H100 80 GB
    "a3-highgpu-8g": (88.249, 26.475),
    # L4
    "g2-standard-4": (0.707, 0.212),
    "g2-standard-8": (0.854, 0.256),
    "g2-standard-12": (1.000, 0.300),
    "g2-standard-16": (1.147, 0.344),
    "g2-standard-24": (2.000, 0.600),
    "g2-standard-32": (1.733, 0.520),
    "g2-standard-48": (4.000, 1.200),
    "g2-standard-96": (8.000, 2.400),
}

ATTACHABLE: dict[str, tuple[str, tuple[int, ...], tuple[float, float]]] = {
    # accelerator type -> (host machine type, counts, price per GPU (on-demand, spot))
    "nvidia-tesla-t4": ("n1-standard-8", (1, 2, 4), (0.35, 0.14)),
}
"""GPUs attached to an N1 machine (``guest_accelerators``) rather than built into it."""

IMAGES: dict[bool, str] = {
    True: "projects/deeplearning-platform-release/global/images/family/"
    "common-cu124-debian-11-py310",
    False: "projects/ubuntu-os-cloud/global/images/family/ubuntu-2204-lts",
}
"""Boot image families, by "has GPUs" (Deep Learning VM images carry the NVIDIA stack)."""

CAPACITY_CODES = frozenset(
    {
        "ZONE_RESOURCE_POOL_EXHAUSTED",
        "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS",
        "RESOURCE_POOL_EXHAUSTED",
        "STOCKOUT",
    }
)


def gpu_name(accelerator_type: str) -> str:
    """``nvidia-tesla-a100`` → ``A100``; ``nvidia-a100-80gb`` → ``A100-80GB``."""
    name = accelerator_type.rsplit("/", 1)[-1].removeprefix("nvidia-").removeprefix("tesla-")
    return name.upper()


HOST_KEY_ATTRIBUTE = "skyward/host-key"

_SCRIPT = """\
#!/bin/bash
# skyward: install the client-generated host key (the client pins it), authorize the
# cluster key, restart sshd, then report the key through the guest attribute
# {attribute} (the client waits for it before it connects).
set -eu
umask 077
cat > /etc/ssh/ssh_host_ed25519_key <<'SKYWARD_HOST_KEY'
{host_key}
SKYWARD_HOST_KEY
echo '{host_public_key}' > /etc/ssh/ssh_host_ed25519_key.pub
chmod 600 /etc/ssh/ssh_host_ed25519_key
chmod 644 /etc/ssh/ssh_host_ed25519_key.pub
mkdir -p /etc/ssh/sshd_config.d
echo 'HostKey /etc/ssh/ssh_host_ed25519_key' > /etc/ssh/sshd_config.d/00-skyward.conf
id -u {user} >/dev/null 2>&1 || useradd -m -s /bin/bash {user}
install -d -m 700 -o {user} -g {user} /home/{user}/.ssh
keys=/home/{user}/.ssh/authorized_keys
grep -qxF '{authorized_key}' "$keys" 2>/dev/null || echo '{authorized_key}' >> "$keys"
chown {user}:{user} "$keys"
chmod 600 "$keys"
systemctl restart ssh 2>/dev/null || systemctl restart sshd
curl -sf -X PUT --data '{host_public_key}' -H 'Metadata-Flavor: Google' \\
  http://metadata.google.internal/computeMetadata/v1/instance/guest-attributes/{attribute}
"""


def startup_script(host_key: str, host_public_key: str, authorized_key: str, user: str) -> str:
    """The instance's ``startup-script``: our host key in, sshd restarted, key reported."""
    return _SCRIPT.format(
        host_key=host_key.strip(),
        host_public_key=host_public_key.strip(),
        authorized_key=authorized_key.strip(),
        user=user,
        attribute=HOST_KEY_ATTRIBUTE,
    )
