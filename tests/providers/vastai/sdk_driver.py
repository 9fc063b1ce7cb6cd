"""The official ``vastai`` SDK (1.9.1) against the Vast.ai simulator: an on-demand and an
interruptible instance, each found by a search, rented, read until it runs with SSH,
reached, destroyed and confirmed gone.

Runs in the SDK's own venv. The SDK is pointed at the simulator only as its users point
it: ``VastAI(api_key=…, server_url=…)`` (``vastai/sdk.py``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from urllib.parse import urlsplit

from vastai import VastAI

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sdkcheck import report, ssh_banner, wait_for  # noqa: E402

vast = VastAI(api_key=os.environ["VAST_API_KEY"], server_url=os.environ["VAST_SERVER_URL"])


def ssh_address(instance_id: int) -> tuple[str, int] | None:
    row = vast.show_instance(instance_id)
    if not row or row.get("actual_status") != "running":
        return None
    url = urlsplit(vast.ssh_url(instance_id))
    return (url.hostname, url.port) if url.hostname and url.port else None


def scenario(kind: str) -> dict:
    offers = vast.search_offers(
        query="num_gpus=1 gpu_name=RTX_4090", type=kind, order="dph_total", storage=40
    )
    offer = offers[0]
    bid = {"price": offer["min_bid"]} if kind == "bid" else {}
    rented = vast.create_instance(
        id=offer["id"], image="pytorch/pytorch:latest", disk=40, label=f"sdk-{kind}",
        ssh=True, direct=True, **bid,
    )  # fmt: skip
    instance_id = rented["new_contract"]
    host, port = wait_for(lambda: ssh_address(instance_id), f"instance {instance_id} with SSH")
    row = vast.show_instance(instance_id)
    banner = ssh_banner(host, port)
    listed = [r["id"] for r in vast.show_instances()]  # /api/v1/instances/, paged
    vast.destroy_instance(instance_id)
    gone = wait_for(lambda: vast.show_instance(instance_id) is None or None, "gone")
    return {
        "id": instance_id, "is_bid": row["is_bid"], "status": row["actual_status"],
        "extra_env": row["extra_env"], "dph_total": offer["dph_total"],
        "verification": offer["verification"], "ssh": [host, port], "banner": banner,
        "listed": instance_id in listed, "gone": gone,
    }  # fmt: skip


key = vast.create_ssh_key(ssh_key=os.environ["SKYWARD_TEST_PUBLIC_KEY"])
result = {kind: scenario(kind) for kind in ("on-demand", "bid")}
vast.delete_ssh_key(key["key"]["id"])
result["keys_left"] = len(vast.show_ssh_keys())
report(result)
