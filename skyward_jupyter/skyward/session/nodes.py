"""What each node is told about the cluster: the variables torch.distributed and
jax.distributed read, and what ``skyward.node()`` answers."""

from __future__ import annotations

from typing import Any

from ..core.registry import ClusterRecord

__all__ = ["MASTER_PORT", "node_settings"]

MASTER_PORT = 29500


def node_settings(
    record: ClusterRecord, secrets: dict[str, str]
) -> list[tuple[str, dict[str, str], dict[str, Any]]]:
    """``(instance id, environment, node info)`` of each ready node of ``record``."""
    nodes = record.node_instances()
    addresses = [n.instance.private_ip or n.instance.ip for n in nodes]
    count = str(len(nodes))
    settings = []
    for n in nodes:
        env = {
            **secrets,
            "MASTER_ADDR": addresses[0],
            "MASTER_PORT": str(MASTER_PORT),
            "WORLD_SIZE": count,
            "RANK": str(n.node),
            "NODE_RANK": str(n.node),
            "LOCAL_RANK": "0",
            "LOCAL_WORLD_SIZE": "1",
            "JAX_COORDINATOR_ADDRESS": f"{addresses[0]}:{MASTER_PORT + 1}",
            "JAX_NUM_PROCESSES": count,
            "JAX_PROCESS_ID": str(n.node),
        }
        info = {"id": n.node, "count": len(nodes), "addresses": addresses, "cluster": record.id}
        settings.append((n.instance.id, env, info))
    return settings
