"""A local RunPod GraphQL API: ``POST /graphql``, parsed, validated and executed by
graphql-core against ``schema.graphql`` (RunPod's published type and field names).

Like the real API it answers a query that does not parse, or asks for a field, argument
or type the schema lacks, or passes a variable of the wrong shape, with HTTP 400 and a
GraphQL ``errors`` list; arguments may be inlined (as the official SDK does) or passed
as variables. A business refusal (no capacity, no funds, an unknown pod) is an error on
its field: HTTP 200, ``errors`` with a ``path``, and that field null. A bad key is 401.

Operations: ``gpuTypes(input: {id | ids})`` with ``lowestPrice(input: {gpuCount,
secureCloud, dataCenterId})``, ``pod(input: {podId})``, ``myself { pods }``,
``podFindAndDeployOnDemand``, ``podRentInterruptable``, ``podStop``, ``podTerminate``.

Each pod is backed by a real local node: from the boot script in its ``SKYWARD_BOOT`` env
(base64) when skyward launched it, else with a fresh host key that lets in the
``PUBLIC_KEY`` env (what RunPod's images do); ``runtime.ports`` maps private port 22 to
the node's address and port.

Faults: ``fail_with("429")``, ``fail_with("500")``, ``refuse_capacity(n)``, ``sell_out()``,
``refuse_funds(n)``, ``preempt(id)``, ``set_status(id, status)``; ``after_terminate``
chooses what ``pod(input)`` answers for a terminated pod ("null" or "error"), since what
the real API answers is not documented.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from graphql import GraphQLError, build_schema, execute, parse, validate

from ..simbase import Reply, Request, Simulator, b64decode

API_KEY = "rp-test-key"
CAPACITY_MESSAGE = (
    "There are no longer any instances available with the requested specifications. "
    "Please refresh and try again."
)
FUNDS_MESSAGE = "Not enough funds in your account to deploy this pod. Please add credit."
GONE_MESSAGE = "Pod not found"
SCHEMA = build_schema((Path(__file__).parent / "schema.graphql").read_text())


@dataclass(frozen=True)
class Gpu:
    """One GPU type: per-GPU prices (on-demand, minimum bid) per cloud, where it is."""

    id: str
    display: str
    memory: int
    secure: tuple[float, float] | None
    community: tuple[float, float] | None
    data_centers: tuple[str, ...] = ("US-TX-3", "EU-RO-1")


GPUS = [
    Gpu("NVIDIA A100 80GB PCIe", "A100 PCIe", 80, (1.64, 0.82), (1.19, 0.60)),
    Gpu("NVIDIA A100-SXM4-80GB", "A100 SXM", 80, (1.89, 0.95), None),
    Gpu("NVIDIA GeForce RTX 4090", "RTX 4090", 24, (0.69, 0.35), (0.34, 0.20), ("EU-RO-1",)),
    Gpu("NVIDIA H100 80GB HBM3", "H100 SXM", 80, (2.99, 1.75), None),
]


@dataclass
class Pod:
    id: str
    name: str
    gpu: Gpu
    gpu_count: int
    interruptible: bool
    cost: float
    env: dict[str, str]
    docker_args: str
    image: str
    machine: str
    desired: str = "RUNNING"
    ip: str = ""
    port: int = 0
    inputs: dict[str, Any] = field(default_factory=dict)

    def json(self) -> dict[str, Any]:
        """The pod in the shape of the schema's ``Pod`` (graphql-core picks the fields)."""
        runtime = None
        if self.desired == "RUNNING" and self.port:
            runtime = {
                "uptimeInSeconds": 1,
                "ports": [
                    {"ip": self.ip, "isIpPublic": True, "privatePort": 22,
                     "publicPort": self.port, "type": "tcp"},
                ],
            }  # fmt: skip
        return {
            "id": self.id,
            "name": self.name,
            "containerDiskInGb": self.inputs.get("containerDiskInGb"),
            "costPerHr": self.cost,
            "desiredStatus": self.desired,
            "dockerArgs": self.docker_args,
            "dockerId": None,
            "env": [f"{k}={v}" for k, v in self.env.items()],
            "gpuCount": self.gpu_count,
            "imageName": self.image,
            "lastStatusChange": f"{self.desired.title()}: by the simulator",
            "machineId": self.machine,
            "memoryInGb": 62 * self.gpu_count,
            "podType": "INTERRUPTABLE" if self.interruptible else "RESERVED",
            "port": None,
            "ports": self.inputs.get("ports"),
            "uptimeSeconds": 1 if runtime else 0,
            "vcpuCount": 8 * self.gpu_count,
            "volumeInGb": self.inputs.get("volumeInGb") or 0,
            "volumeMountPath": self.inputs.get("volumeMountPath"),
            "runtime": runtime,
            "machine": {
                "gpuDisplayName": self.gpu.display,
                "location": self.inputs.get("dataCenterId") or self.gpu.data_centers[0],
                "podHostId": f"{self.id}-{self.machine}",
                "secureCloud": not self.interruptible,
                "supportPublicIp": True,
            },
        }


class RunPodSimulator(Simulator):
    """RunPod's GraphQL API on 127.0.0.1."""

    name = "runpod"

    def __init__(self, after_terminate: str = "null") -> None:
        self.pods: dict[str, Pod] = {}
        self.after_terminate = after_terminate
        self.funds_refusals = 0
        self._machines = itertools.count(1)
        self.operations: list[str] = []  # the root fields each request asked for
        super().__init__()

    def preempt(self, pod_id: str) -> None:
        """Outbid an interruptible pod: RunPod stops it (desiredStatus EXITED)."""
        self.set_status(pod_id, "EXITED")

    def set_status(self, pod_id: str, status: str) -> None:
        """Put a pod in one of the schema's ``PodStatus`` values (its node stops unless
        the status is RUNNING)."""
        if status not in SCHEMA.get_type("PodStatus").values:  # type: ignore[union-attr]
            raise ValueError(f"not a PodStatus: {status}")
        if status != "RUNNING":
            self.stop_backing(pod_id)
        with self.lock:
            pod = self.pods[pod_id]
            pod.desired = status
            if status != "RUNNING":
                pod.ip, pod.port = "", 0

    def refuse_funds(self, times: int = 1) -> None:
        """Refuse the next ``times`` deploys for want of funds (not a capacity error)."""
        with self.lock:
            self.funds_refusals += times

    def live_pods(self) -> list[Pod]:
        with self.lock:
            return [p for p in self.pods.values() if p.desired != "TERMINATED"]

    # -- HTTP ---------------------------------------------------------------------------

    def handle(self, request: Request) -> Reply:
        if request.method != "POST" or request.path != "/graphql":
            return Reply(404, {"error": "not found"})
        key = request.query.get("api_key") or request.headers.get("Authorization", "")
        if key.removeprefix("Bearer ") != API_KEY:
            return Reply(401, {"errors": [{"message": "Unauthorized: invalid api key"}]})
        body = request.body if isinstance(request.body, dict) else {}
        unknown = set(body) - {"query", "variables", "operationName", "extensions"}
        if unknown or not isinstance(body.get("query"), str):
            return _bad(f"bad request body (fields {sorted(unknown)})", "BAD_REQUEST")
        try:
            document = parse(body["query"])
        except GraphQLError as exc:
            return _bad(exc.message, "GRAPHQL_PARSE_FAILED", exc)
        problems = validate(SCHEMA, document)
        if problems:
            shown = [_error(p, "GRAPHQL_VALIDATION_FAILED") for p in problems]
            return Reply(400, {"errors": shown})
        self._note_operations(document)
        result = execute(
            SCHEMA,
            document,
            root_value=_Root(self),
            variable_values=body.get("variables") or {},
            operation_name=body.get("operationName"),
        )
        if result.data is None:  # variables that do not fit: nothing was executed
            errors = result.errors or []
            return Reply(400, {"errors": [_error(e, "BAD_USER_INPUT") for e in errors]})
        answer: dict[str, Any] = {"data": result.data}
        if result.errors:
            answer["errors"] = [_error(e, "INTERNAL_SERVER_ERROR") for e in result.errors]
        return Reply(200, answer)

    def _note_operations(self, document: Any) -> None:
        names = [
            selection.name.value
            for definition in document.definitions
            for selection in getattr(definition, "selection_set", None).selections
        ]
        with self.lock:
            self.operations.extend(names)

    # -- resolvers ----------------------------------------------------------------------

    def gpu_types(self, wanted: dict[str, Any] | None) -> list[dict[str, Any]]:
        ids = set((wanted or {}).get("ids") or [])
        if (wanted or {}).get("id"):
            ids.add(wanted["id"])  # type: ignore[index]
        return [_gpu_json(g, self.sold_out) for g in GPUS if not ids or g.id in ids]

    def deploy(self, pod_input: dict[str, Any], spot: bool) -> dict[str, Any]:
        if self.take_capacity_refusal():
            raise GraphQLError(CAPACITY_MESSAGE)
        with self.lock:
            if self.funds_refusals > 0:
                self.funds_refusals -= 1
                raise GraphQLError(FUNDS_MESSAGE)
        gpu = next((g for g in GPUS if g.id == pod_input.get("gpuTypeId")), None)
        if gpu is None:
            raise GraphQLError(f"Invalid GPU type: {pod_input.get('gpuTypeId')}")
        cloud = pod_input.get("cloudType") or "ALL"
        prices = {"SECURE": gpu.secure, "COMMUNITY": gpu.community}.get(
            cloud, gpu.secure or gpu.community
        )
        if prices is None:
            raise GraphQLError(CAPACITY_MESSAGE)
        count = int(pod_input.get("gpuCount") or 1)
        bid = pod_input.get("bidPerGpu")
        if spot and (bid is None or bid < prices[1]):
            raise GraphQLError(f"Your bid price is below the minimum bid of ${prices[1]:.2f}")
        env = {e["key"]: e["value"] for e in pod_input.get("env") or []}
        docker_args = pod_input.get("dockerArgs") or ""
        with self.lock:
            pod = Pod(
                f"pod{self.new_id():04d}", str(pod_input.get("name") or ""), gpu, count, spot,
                round((bid if spot else prices[0]) * count, 4), env, docker_args,
                str(pod_input.get("imageName") or ""), f"m{next(self._machines):03d}",
                inputs=pod_input,
            )  # fmt: skip
            self.pods[pod.id] = pod

        def ready(host: str, port: int) -> None:
            with self.lock:
                if pod.desired == "RUNNING":
                    pod.ip, pod.port = host, port

        if "SKYWARD_BOOT" in env and "SKYWARD_BOOT" in docker_args:
            self.start_backing(pod.id, len(self.pods), b64decode(env["SKYWARD_BOOT"]), ready)
        else:
            authorized = env.get("PUBLIC_KEY", "")
            self.start_backing_keys(pod.id, len(self.pods), self.new_host_key(), authorized, ready)
        return pod.json()

    def pod(self, pod_id: str) -> dict[str, Any] | None:
        with self.lock:
            pod = self.pods.get(pod_id)
        if pod is None or pod.desired == "TERMINATED":
            if pod is not None and self.after_terminate == "null":
                return None
            raise GraphQLError(GONE_MESSAGE)
        return pod.json()

    def stop(self, pod_id: str) -> dict[str, Any]:
        with self.lock:
            pod = self.pods.get(pod_id)
        if pod is None or pod.desired == "TERMINATED":
            raise GraphQLError(GONE_MESSAGE)
        self.set_status(pod_id, "EXITED")
        return pod.json()

    def terminate(self, pod_id: str) -> None:
        with self.lock:
            pod = self.pods.get(pod_id)
        if pod is None or pod.desired == "TERMINATED":
            raise GraphQLError(GONE_MESSAGE)
        self.stop_backing(pod_id)
        with self.lock:
            pod.desired, pod.ip, pod.port = "TERMINATED", "", 0


class _Root:
    """The root value: graphql-core calls each method as the resolver of the root field
    of its name (``info`` first, then the field's arguments)."""

    def __init__(self, sim: RunPodSimulator) -> None:
        self.sim = sim

    def gpuTypes(self, info: Any, input: dict[str, Any] | None = None) -> Any:  # noqa: N802
        return self.sim.gpu_types(input)

    def pod(self, info: Any, input: dict[str, Any] | None = None) -> Any:
        if not input:
            raise GraphQLError("podId is required")
        return self.sim.pod(input["podId"])

    def myself(self, info: Any) -> Any:
        pods = [p.json() for p in self.sim.live_pods()]
        return {"id": "user-sim", "pubKey": "", "pods": pods, "networkVolumes": []}

    def podFindAndDeployOnDemand(self, info: Any, input: dict[str, Any] | None = None) -> Any:  # noqa: N802
        return self.sim.deploy(input or {}, spot=False)

    def podRentInterruptable(self, info: Any, input: dict[str, Any]) -> Any:  # noqa: N802
        return self.sim.deploy(input, spot=True)

    def podStop(self, info: Any, input: dict[str, Any]) -> Any:  # noqa: N802
        return self.sim.stop(input["podId"])

    def podTerminate(self, info: Any, input: dict[str, Any]) -> Any:  # noqa: N802
        return self.sim.terminate(input["podId"])


def _gpu_json(gpu: Gpu, sold_out: bool = False) -> dict[str, Any]:
    def lowest_price(info: Any, input: dict[str, Any] | None = None) -> dict[str, Any] | None:
        if input is None:
            raise GraphQLError("lowestPrice needs an input (gpuCount)")
        if sold_out:  # no machine of this type left: RunPod lists no price for it
            return None
        secure = input.get("secureCloud")
        choices = {True: [gpu.secure], False: [gpu.community]}.get(
            secure, [gpu.secure, gpu.community]
        )
        offered = [p for p in choices if p is not None]
        where = input.get("dataCenterId")
        if not offered or (where and where not in gpu.data_centers):
            return None
        count = int(input.get("gpuCount") or 1)
        on_demand, bid = min(offered)
        return {
            "gpuName": gpu.display,
            "gpuTypeId": gpu.id,
            "minimumBidPrice": bid,
            "uninterruptablePrice": on_demand,
            "minVcpu": 8 * count,
            "minMemory": 62 * count,
            "stockStatus": "High",
            "maxUnreservedGpuCount": 8,
            "availableGpuCounts": [1, 2, 4, 8],
        }

    return {
        "id": gpu.id,
        "displayName": gpu.display,
        "manufacturer": "Nvidia",
        "memoryInGb": gpu.memory,
        "cudaCores": 0,
        "maxGpuCount": 8,
        "secureCloud": gpu.secure is not None,
        "communityCloud": gpu.community is not None,
        "securePrice": gpu.secure[0] if gpu.secure else None,
        "communityPrice": gpu.community[0] if gpu.community else None,
        "secureSpotPrice": gpu.secure[1] if gpu.secure else None,
        "communitySpotPrice": gpu.community[1] if gpu.community else None,
        "oneWeekPrice": None,
        "oneMonthPrice": None,
        "threeMonthPrice": None,
        "sixMonthPrice": None,
        "lowestPrice": lowest_price,
    }


def _error(error: GraphQLError, code: str) -> dict[str, Any]:
    shown = error.formatted
    shown.setdefault("extensions", {})["code"] = code
    return shown


def _bad(message: str, code: str, error: GraphQLError | None = None) -> Reply:
    shown = _error(error, code) if error else {"message": message, "extensions": {"code": code}}
    return Reply(400, {"errors": [shown]})
