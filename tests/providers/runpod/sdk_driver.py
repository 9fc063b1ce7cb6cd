"""The official ``runpod`` SDK (1.12) against the RunPod simulator: an on-demand and a spot
pod, each created, read until it runs with SSH, reached, terminated and confirmed gone.

Runs in the SDK's own venv. The SDK is pointed at the simulator only as its users point
it: ``RUNPOD_API_BASE_URL`` (read by ``runpod/api/graphql.py`` on every call) and
``runpod.api_key``. The SDK has no function for a spot pod; the driver sends
``podRentInterruptable`` through the SDK's own GraphQL client, written the way
``create_pod`` writes its mutation (arguments inline).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import runpod
from runpod.api.graphql import run_graphql_query
from runpod.error import QueryError

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sdkcheck import report, ssh_banner, wait_for  # noqa: E402

GPU = "NVIDIA GeForce RTX 4090"
runpod.api_key = os.environ["RUNPOD_API_KEY"]
PUBLIC_KEY = os.environ["SKYWARD_TEST_PUBLIC_KEY"]


def rent_spot(name: str, bid: float) -> dict:
    mutation = f"""
    mutation {{
      podRentInterruptable(input: {{
        bidPerGpu: {bid}, cloudType: SECURE, gpuCount: 1, volumeInGb: 0,
        containerDiskInGb: 10, minVcpuCount: 1, minMemoryInGb: 1,
        gpuTypeId: "{GPU}", name: "{name}", imageName: "runpod/base:0.6.2-cpu",
        dockerArgs: "", ports: "22/tcp", volumeMountPath: "/workspace", startSsh: true,
        supportPublicIp: true, env: [{{ key: "PUBLIC_KEY", value: "{PUBLIC_KEY}" }}]
      }}) {{ id imageName env machineId machine {{ podHostId }} }}
    }}"""
    return run_graphql_query(mutation)["data"]["podRentInterruptable"]


def ssh_address(pod_id: str) -> tuple[str, int] | None:
    pod = runpod.get_pod(pod_id)
    for port in ((pod or {}).get("runtime") or {}).get("ports") or []:
        if port["privatePort"] == 22 and port["isIpPublic"]:
            return port["ip"], port["publicPort"]
    return None


def gone(pod_id: str) -> str | None:
    try:
        pod = runpod.get_pod(pod_id)
    except QueryError as exc:
        return f"error: {exc}"
    if pod is None:
        return "null"
    return "terminated" if pod["desiredStatus"] == "TERMINATED" else None


def scenario(kind: str) -> dict:
    gpu = runpod.get_gpu(GPU)  # gpuTypes(input: {id}) with lowestPrice, inline
    if kind == "spot":
        pod = rent_spot("sdk-spot", gpu["secureSpotPrice"])  # the SECURE cloud's minimum bid
    else:
        pod = runpod.create_pod(
            "sdk-on-demand", "runpod/base:0.6.2-cpu", GPU, cloud_type="SECURE",
            ports="22/tcp", env={"PUBLIC_KEY": PUBLIC_KEY},
        )  # fmt: skip
    pod_id = pod["id"]
    status = runpod.get_pod(pod_id)
    host, port = wait_for(lambda: ssh_address(pod_id), f"pod {pod_id} with SSH")
    banner = ssh_banner(host, port)
    listed = [p["id"] for p in runpod.get_pods()]
    runpod.terminate_pod(pod_id)
    answer = wait_for(lambda: gone(pod_id), f"pod {pod_id} gone")
    return {
        "id": pod_id, "podType": status["podType"], "desiredStatus": status["desiredStatus"],
        "ssh": [host, port], "banner": banner, "listed": pod_id in listed, "gone": answer,
    }  # fmt: skip


report({kind: scenario(kind) for kind in ("on-demand", "spot")})
