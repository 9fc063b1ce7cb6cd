"""What the simulated Compute Engine offers: its zones, machine and accelerator types, and
the firewall rules a project's ``default`` network comes with, in Compute's JSON shapes."""

from __future__ import annotations

from typing import Any

__all__ = [
    "ACCELERATOR_TYPES",
    "DEFAULT_NETWORK_FIREWALLS",
    "MACHINE_TYPES",
    "REGION",
    "ZONES",
    "machine_type_shape",
    "zone_shape",
]

REGION = "us-central1"
ZONES = ("us-central1-a", "us-central1-b", "us-central1-c")
MACHINE_TYPES: dict[str, tuple[int, int, str, int]] = {
    # name -> (vCPUs, memory MB, built-in accelerator type, count)
    "e2-standard-4": (4, 16384, "", 0),
    "n2-standard-4": (4, 16384, "", 0),
    "n1-standard-8": (8, 30720, "", 0),
    "g2-standard-4": (4, 16384, "nvidia-l4", 1),
    "a2-highgpu-1g": (12, 87040, "nvidia-tesla-a100", 1),
    "a2-highgpu-2g": (24, 174080, "nvidia-tesla-a100", 2),
    "a2-highgpu-4g": (48, 348160, "nvidia-tesla-a100", 4),
    "a2-ultragpu-2g": (24, 348160, "nvidia-a100-80gb", 2),
}
ACCELERATOR_TYPES = ("nvidia-tesla-t4", "nvidia-tesla-a100", "nvidia-l4", "nvidia-a100-80gb")
DEFAULT_NETWORK_FIREWALLS: dict[str, dict[str, Any]] = {
    # What Compute Engine creates with a project's ``default`` network.
    "default-allow-internal": {
        "description": "Allow internal traffic on the default network",
        "sourceRanges": ["10.128.0.0/9"],
        "allowed": [
            {"IPProtocol": "tcp", "ports": ["0-65535"]},
            {"IPProtocol": "udp", "ports": ["0-65535"]},
            {"IPProtocol": "icmp"},
        ],
    },
    "default-allow-ssh": {
        "description": "Allow SSH from anywhere",
        "sourceRanges": ["0.0.0.0/0"],
        "allowed": [{"IPProtocol": "tcp", "ports": ["22"]}],
    },
    "default-allow-rdp": {
        "description": "Allow RDP from anywhere",
        "sourceRanges": ["0.0.0.0/0"],
        "allowed": [{"IPProtocol": "tcp", "ports": ["3389"]}],
    },
    "default-allow-icmp": {
        "description": "Allow ICMP from anywhere",
        "sourceRanges": ["0.0.0.0/0"],
        "allowed": [{"IPProtocol": "icmp"}],
    },
}


def zone_shape(base: str, name: str) -> dict[str, Any]:
    return {
        "kind": "compute#zone",
        "name": name,
        "region": f"{base}/regions/{REGION}",
        "status": "UP",
        "selfLink": f"{base}/zones/{name}",
    }


def machine_type_shape(zone_url: str, name: str) -> dict[str, Any]:
    cpus, memory, accelerator, count = MACHINE_TYPES[name]
    shape: dict[str, Any] = {
        "kind": "compute#machineType",
        "name": name,
        "guestCpus": cpus,
        "memoryMb": memory,
        "zone": zone_url,
        "selfLink": f"{zone_url}/machineTypes/{name}",
    }
    if accelerator:
        shape["accelerators"] = [
            {"guestAcceleratorType": accelerator, "guestAcceleratorCount": count}
        ]
    return shape
