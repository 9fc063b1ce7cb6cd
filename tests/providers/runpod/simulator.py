"""A local RunPod GraphQL API: ``POST /graphql`` with the documented operations.

Supported (by operation name in the query): ``gpuTypes`` with ``lowestPrice`` (aliased
per cloud), ``podFindAndDeployOnDemand``, ``podRentInterruptable``, ``pod(input:
{podId})``, ``myself { pods }`` and ``podTerminate``. Answers follow GraphQL: HTTP 200
with ``data``, or ``errors`` (capacity: RunPod's "There are no longer any instances
available ..."). A bad key is HTTP 401. Each pod is backed by a real local node started
from the boot script in its ``SKYWARD_BOOT`` env (base64); ``runtime.ports`` maps
private port 22 to the node's address and port.

Faults: ``fail_with("429")``, ``fail_with("500")``, ``refuse_capacity(n)``, ``preempt(id)``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ..simbase import Reply, Request, Simulator, b64decode

API_KEY = "rp-test-key"
CAPACITY_MESSAGE = (
    "There are no longer any instances available with the requested specifications. "
    "Please refresh and try again."
)

# id, displayName, memory, secure (on-demand, bid), community (on-demand, bid) per GPU
GPUS = [
    ("NVIDIA A100 80GB PCIe", "A100 PCIe", 80, (1.64, 0.82), (1.19, 0.60)),
    ("NVIDIA A100-SXM4-80GB", "A100 SXM", 80, (1.89, 0.95), None),
    ("NVIDIA GeForce RTX 4090", "RTX 4090", 24, (0.69, 0.35), (0.34, 0.20)),
    ("NVIDIA H100 80GB HBM3", "H100 SXM", 80, (2.99, 1.75), None),
]


@dataclass
class Pod:
    id: str
    name: str
    gpu_type: str
    gpu_count: int
    interruptible: bool
    cost: float
    env: dict[str, str]
    docker_args: str
    desired: str = "RUNNING"
    ip: str = ""
    port: int = 0
    inputs: dict[str, Any] = field(default_factory=dict)


class RunPodSimulator(Simulator):
    """RunPod's GraphQL API on 127.0.0.1."""

    name = "runpod"

    def __init__(self) -> None:
        self.pods: dict[str, Pod] = {}
        super().__init__()

    def preempt(self, pod_id: str) -> None:
        """Outbid an interruptible pod: RunPod stops it (desiredStatus EXITED)."""
        self.stop_backing(pod_id)
        with self.lock:
            pod = self.pods[pod_id]
            pod.desired, pod.ip, pod.port = "EXITED", "", 0

    def live_pods(self) -> list[Pod]:
        with self.lock:
            return [p for p in self.pods.values() if p.desired != "TERMINATED"]

    # -- GraphQL ------------------------------------------------------------------------

    def handle(self, request: Request) -> Reply:
        if request.method != "POST" or request.path != "/graphql":
            return Reply(404, {"error": "not found"})
        if request.headers.get("Authorization") != f"Bearer {API_KEY}":
            return Reply(401, {"errors": [{"message": "Unauthorized: invalid api key"}]})
        query = str((request.body or {}).get("query", ""))
        variables = (request.body or {}).get("variables") or {}
        if "podFindAndDeployOnDemand" in query:
            return self._deploy(variables["input"], False, "podFindAndDeployOnDemand")
        if "podRentInterruptable" in query:
            return self._deploy(variables["input"], True, "podRentInterruptable")
        if "podTerminate" in query:
            return self._terminate(variables["input"]["podId"])
        if "gpuTypes" in query:
            return Reply(200, {"data": {"gpuTypes": self._gpu_types(query, variables)}})
        if re.search(r"\bpod\(input", query):
            pod = self.pods.get(variables["input"]["podId"])
            shown = None if pod is None or pod.desired == "TERMINATED" else _pod_json(pod)
            return Reply(200, {"data": {"pod": shown}})
        if "myself" in query:
            pods = [{"id": p.id, "name": p.name, "desiredStatus": p.desired}
                    for p in self.live_pods()]  # fmt: skip
            return Reply(200, {"data": {"myself": {"pods": pods}}})
        return Reply(200, {"errors": [{"message": "simulator: unsupported operation"}]})

    def _gpu_types(self, query: str, variables: dict[str, Any]) -> list[dict[str, Any]]:
        aliases = re.findall(r"(\w+)\s*:\s*lowestPrice\(input:\s*\$(\w+)\)", query)
        rows = []
        for gpu_id, display, memory, secure, community in GPUS:
            row: dict[str, Any] = {
                "id": gpu_id,
                "displayName": display,
                "memoryInGb": memory,
                "secureCloud": secure is not None,
                "communityCloud": community is not None,
            }
            for alias, variable in aliases:
                price_input = variables.get(variable) or {}
                prices = secure if price_input.get("secureCloud", True) else community
                count = int(price_input.get("gpuCount") or 1)
                row[alias] = None if prices is None else {
                    "uninterruptablePrice": prices[0],
                    "minimumBidPrice": prices[1],
                    "minVcpu": 8 * count,
                    "minMemory": 62 * count,
                    "stockStatus": "High",
                }  # fmt: skip
            rows.append(row)
        return rows

    def _deploy(self, pod_input: dict[str, Any], spot: bool, operation: str) -> Reply:
        if self.take_capacity_refusal():
            return Reply(
                200,
                {"errors": [{"message": CAPACITY_MESSAGE, "path": [operation]}],
                 "data": {operation: None}},
            )  # fmt: skip
        env = {e["key"]: e["value"] for e in pod_input.get("env") or []}
        if "SKYWARD_BOOT" not in (pod_input.get("dockerArgs") or ""):
            return Reply(200, {"errors": [{"message": "simulator: no boot script in dockerArgs"}]})
        script = b64decode(env["SKYWARD_BOOT"])
        gpu = next(g for g in GPUS if g[0] == pod_input["gpuTypeId"])
        prices = gpu[3] if pod_input.get("cloudType") == "SECURE" else gpu[4]
        count = int(pod_input.get("gpuCount") or 1)
        pod_id = f"pod{self.new_id():04d}"
        pod = Pod(
            pod_id, pod_input["name"], gpu[0], count, spot,
            (pod_input.get("bidPerGpu") or prices[0]) * count,
            env, pod_input.get("dockerArgs", ""), inputs=pod_input,
        )  # fmt: skip
        with self.lock:
            self.pods[pod_id] = pod

        def ready(host: str, port: int) -> None:
            with self.lock:
                if pod.desired == "RUNNING":
                    pod.ip, pod.port = host, port

        self.start_backing(pod_id, len(self.pods), script, ready)
        return Reply(
            200, {"data": {operation: {"id": pod_id, "name": pod.name, "desiredStatus": "RUNNING"}}}
        )

    def _terminate(self, pod_id: str) -> Reply:
        self.stop_backing(pod_id)
        with self.lock:
            pod = self.pods.get(pod_id)
            if pod is not None:
                pod.desired = "TERMINATED"
        return Reply(200, {"data": {"podTerminate": None}})


def _pod_json(pod: Pod) -> dict[str, Any]:
    runtime = None
    if pod.desired == "RUNNING" and pod.port:
        runtime = {
            "uptimeInSeconds": 1,
            "ports": [
                {"ip": pod.ip, "isIpPublic": True, "privatePort": 22,
                 "publicPort": pod.port, "type": "tcp"},
            ],
        }  # fmt: skip
    return {
        "id": pod.id,
        "name": pod.name,
        "desiredStatus": pod.desired,
        "podType": "INTERRUPTABLE" if pod.interruptible else "RESERVED",
        "costPerHr": pod.cost,
        "gpuCount": pod.gpu_count,
        "vcpuCount": 8 * pod.gpu_count,
        "memoryInGb": 62 * pod.gpu_count,
        "runtime": runtime,
    }
