"""A GCP cluster's firewall rules: SSH from the caller only, everything between its VMs.

Why apart: the rules are the cluster's only shared resource on Compute; they are made
at ``prepare``, checked once against the network's other rules (one that admits SSH from
anywhere makes ours protect nothing, and the user is told), and deleted at teardown.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ...errors import ProvisionError
from .api import ComputeApi

__all__ = ["NETWORK", "delete_firewall", "firewall_rules", "warn_if_ssh_is_open"]

log = logging.getLogger("skyward")

NETWORK = "global/networks/default"
ANYWHERE = {"0.0.0.0/0", "::/0"}


def firewall_rules(api: ComputeApi, cluster_id: str, tag: str, cidr: str) -> list[Any]:
    """SSH from ``cidr`` only; everything between the VMs tagged ``tag``."""
    c = api.compute
    return [
        c.Firewall(
            name=tag,
            description=f"skyward cluster {cluster_id}: SSH from {cidr} only",
            network=NETWORK,
            direction="INGRESS",
            priority=1000,
            allowed=[c.Allowed(I_p_protocol="tcp", ports=["22"])],
            source_ranges=[cidr],
            target_tags=[tag],
        ),
        c.Firewall(
            name=f"{tag}-internal",
            description=f"skyward cluster {cluster_id}: all traffic between its VMs",
            network=NETWORK,
            direction="INGRESS",
            priority=1000,
            allowed=[c.Allowed(I_p_protocol=p) for p in ("tcp", "udp", "icmp")],
            source_tags=[tag],
            target_tags=[tag],
        ),
    ]


async def warn_if_ssh_is_open(api: ComputeApi, tag: str) -> None:
    """Say (once, at ``up``) which rules of the network admit SSH from anywhere."""
    from google.api_core import exceptions as gexc

    try:
        pager = await api.call(api.firewalls.list, project=api.project)
        rules = await asyncio.to_thread(list, pager)  # further pages are fetched here
    except (ProvisionError, gexc.GoogleAPICallError) as exc:
        log.info("skyward: gcp: could not list the firewall rules to check SSH: %s", exc)
        return
    found = sorted(r.name for r in rules if _admits_ssh_from_anywhere(r, tag))
    if found:
        log.warning(
            "skyward: gcp: network 'default' also admits SSH from anywhere (%s), so the "
            "cluster's rule admitting this machine only protects nothing; narrow it, "
            "e.g. `gcloud compute firewall-rules delete %s`",
            ", ".join(found), found[0],
        )  # fmt: skip


async def delete_firewall(api: ComputeApi, name: str) -> None:
    """Delete one rule; one already gone is done."""
    from google.api_core import exceptions as gexc

    try:
        operation = await api.call(api.firewalls.delete_unary, project=api.project, firewall=name)
        await api.wait(operation, zone=None)
    except gexc.NotFound:
        return


def _admits_ssh_from_anywhere(rule: Any, tag: str) -> bool:
    """Whether a firewall rule lets any address reach tcp/22 of the cluster's VMs.

    Best effort: a deny rule of higher priority that would block it is not weighed.
    """
    if rule.network.rsplit("/", 1)[-1] != NETWORK.rsplit("/", 1)[-1]:
        return False
    if (rule.direction or "INGRESS") != "INGRESS" or rule.disabled:
        return False
    if not ANYWHERE & set(rule.source_ranges):
        return False
    if rule.target_service_accounts:  # our VMs run without a service account
        return False
    if rule.target_tags and tag not in rule.target_tags:
        return False
    return any(_covers_ssh(allowed) for allowed in rule.allowed)


def _covers_ssh(allowed: Any) -> bool:
    protocol = str(allowed.I_p_protocol).lower()
    if protocol == "all":
        return True
    if protocol not in ("tcp", "6"):
        return False
    if not allowed.ports:
        return True  # every port
    for ports in allowed.ports:
        low, _, high = ports.partition("-")
        if int(low) <= 22 <= int(high or low):
            return True
    return False
