"""The ``runpod`` provider: GPU pods through RunPod's GraphQL API (httpx).

Endpoint ``https://api.runpod.io/graphql`` (``SKYWARD_RUNPOD_ENDPOINT`` overrides the
base), key from ``RUNPOD_API_KEY`` sent as a bearer token. Offers come from ``gpuTypes``
with ``lowestPrice`` per cloud (secure, community); on-demand pods are launched with
``podFindAndDeployOnDemand``, spot ones with ``podRentInterruptable`` bidding the minimum
bid. Each pod is named ``<cluster id>-n<node>``.

Host key: RunPod takes the container's start command (``dockerArgs``) and environment at
launch, so the pod gets ``PUBLIC_KEY`` (RunPod's images authorize it for root) and
``SKYWARD_BOOT``, the boot script (base64) that installs the client-generated host key
before the image's ``/start.sh`` starts sshd: the host key is pinned. The key lives in the
pod's configuration until the pod is terminated.

States: every ``desiredStatus`` of RunPod's ``PodStatus`` is mapped (``_STATES``). An
interruptible pod that is outbid is stopped (EXITED): that is preemption. A DEAD, PAUSED
or EXITED pod is a lost node at once, never a pending one. Once terminated, RunPod may
answer ``pod(input: {podId})`` with null or with an error on that field: both read as
gone. Only RunPod's own words for "no machine" are a capacity error (the next offer is
tried); any other refusal, funds included, stops the launch with RunPod's message.

RunPod has no cluster-level resources (the key travels per pod), so ``teardown`` only
makes sure no pod of the cluster is left, and ``restore`` needs nothing but the id.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

from ...core.provider import InstanceState, LaunchRequest, StatusReport
from ...errors import CapacityError, ProvisionError
from ...events import InstanceId
from ...model import ClusterSpec, Instance, Offer
from ..bootscript import boot_script, docker_command, encode
from ..cloud import Candidate, accelerator_matches, poll_until, rank, wanted_gpus
from ..http import Classifier, short_text
from ..httpcloud import CloudCluster, HttpCloud

__all__ = ["DEFAULT_IMAGE", "RunPodProvider"]

ENDPOINT = "https://api.runpod.io"
DEFAULT_IMAGE = "runpod/pytorch:2.4.0-py3.11-cuda12.4.1-devel-ubuntu22.04"
CREDENTIAL = "RUNPOD_API_KEY"
_CAPACITY = re.compile(
    r"there are no longer any instances available|not enough free gpus on the host", re.I
)
_STATES: dict[str, tuple[InstanceState, str]] = {
    "CREATED": (InstanceState.PENDING, "pod created, not started yet"),
    "RESTARTING": (InstanceState.PENDING, "pod restarting"),
    "RUNNING": (InstanceState.RUNNING, ""),
    "EXITED": (InstanceState.STOPPED, "pod exited"),
    "PAUSED": (InstanceState.STOPPED, "pod paused"),
    "DEAD": (InstanceState.STOPPED, "pod dead"),
    "TERMINATED": (InstanceState.TERMINATED, "pod terminated"),
}
"""RunPod's ``PodStatus`` values -> our state and the reason shown."""

_GPU_TYPES = """
query GpuTypes($secure: GpuLowestPriceInput, $community: GpuLowestPriceInput) {
  gpuTypes {
    id displayName memoryInGb secureCloud communityCloud
    secure: lowestPrice(input: $secure) {
      minimumBidPrice uninterruptablePrice minVcpu minMemory stockStatus
    }
    community: lowestPrice(input: $community) {
      minimumBidPrice uninterruptablePrice minVcpu minMemory stockStatus
    }
  }
}"""
_POD_FIELDS = """id name desiredStatus podType costPerHr gpuCount vcpuCount memoryInGb
    runtime { uptimeInSeconds ports { ip isIpPublic privatePort publicPort type } }"""
_ON_DEMAND = (
    "mutation Deploy($input: PodFindAndDeployOnDemandInput) {"
    " podFindAndDeployOnDemand(input: $input) { id name desiredStatus } }"
)
_SPOT = (
    "mutation Rent($input: PodRentInterruptableInput!) {"
    " podRentInterruptable(input: $input) { id name desiredStatus } }"
)
_POD = f"query Pod($input: PodFilter) {{ pod(input: $input) {{ {_POD_FIELDS} }} }}"
_PODS = "query Pods { myself { pods { id name desiredStatus } } }"
_TERMINATE = "mutation Terminate($input: PodTerminateInput!) { podTerminate(input: $input) }"


def _errors_on(field_name: str, body: Any) -> bool:
    """Whether every GraphQL error in ``body`` is on the root field ``field_name``."""
    errors = body.get("errors") if isinstance(body, dict) else None
    return (
        isinstance(errors, list)
        and bool(errors)
        and all(isinstance(e, dict) and (e.get("path") or [None])[0] == field_name for e in errors)
    )


def _answer_on(field_name: str) -> Classifier:
    """A classifier that lets an error on the root field ``field_name`` through as an
    answer (``pod`` of a terminated pod, ``podTerminate`` of one already gone)."""

    def classify(status: int, body: Any) -> Exception | None:
        if status == 200 and _errors_on(field_name, body):
            return None
        return _classify(status, body)

    return classify


def _classify(status: int, body: Any) -> Exception | None:
    """GraphQL answers errors with HTTP 200 and an ``errors`` list: map them."""
    errors = body.get("errors") if isinstance(body, dict) else None
    if not errors:
        return None
    message = short_text({"errors": errors})
    if _CAPACITY.search(message):
        return CapacityError(f"runpod: {message}")
    if re.search(r"unauthori[sz]ed|api key|forbidden", message, re.I):
        return ProvisionError(f"runpod rejected the credentials ({message}): check {CREDENTIAL}")
    return ProvisionError(f"runpod: {message}")


class RunPodProvider(HttpCloud[CloudCluster]):
    """RunPod pods behind the provider protocol. RunPod has no cluster-level resources
    (the key travels per pod): its context is the shared one."""

    name = "runpod"
    context_type = CloudCluster
    endpoint = ENDPOINT
    default_image = DEFAULT_IMAGE
    credential = CREDENTIAL
    key_hint = f"{CREDENTIAL} (an API key)"
    noun = "pod"
    _classify = staticmethod(_classify)

    async def _gql(self, query: str, variables: dict[str, Any] | None = None, **kw: Any) -> Any:
        body = await self._api.call(
            "POST", "/graphql", json={"query": query, "variables": variables or {}}, **kw
        )
        if isinstance(body, dict) and "data" in body:
            return body["data"] or {}
        return body

    # -- offers -------------------------------------------------------------------------

    async def _candidates(self, spec: ClusterSpec) -> list[Candidate]:
        count = wanted_gpus(spec)
        price_input: dict[str, Any] = {"gpuCount": count}
        if spec.region:
            price_input["dataCenterId"] = spec.region
        data = await self._gql(
            _GPU_TYPES,
            {
                "secure": {**price_input, "secureCloud": True},
                "community": {**price_input, "secureCloud": False},
            },
        )
        found: list[Candidate] = []
        for gpu in data.get("gpuTypes") or []:
            name = gpu.get("displayName") or gpu.get("id")
            if not (accelerator_matches(spec.accelerator, name)
                    or accelerator_matches(spec.accelerator, gpu.get("id"))):  # fmt: skip
                continue
            for cloud in ("secure", "community"):
                price = gpu.get(cloud) or {}
                if not gpu.get(f"{cloud}Cloud") or price.get("uninterruptablePrice") is None:
                    continue
                bid = price.get("minimumBidPrice")
                offer = Offer(
                    provider="runpod",
                    instance_type=f"{gpu['id']} x{count} ({cloud})",
                    accelerator=name,
                    accelerator_count=count,
                    vcpus=float(price.get("minVcpu") or 0),
                    memory_gb=float(price.get("minMemory") or 0),
                    price_per_hour=round(float(price["uninterruptablePrice"]) * count, 4),
                    spot_price_per_hour=None if bid is None else round(float(bid) * count, 4),
                    region=spec.region or cloud,
                )
                data_ = {"gpuTypeId": gpu["id"], "cloudType": cloud.upper(), "bid": bid}
                found.append(Candidate(offer, False, data_))
                if bid is not None:
                    found.append(Candidate(offer, True, data_))
        return rank(found, _region_free(spec))

    # -- lifecycle ----------------------------------------------------------------------

    async def launch(self, context: CloudCluster, request: LaunchRequest) -> InstanceId:
        """Deploy one pod, falling back to the next offer when one has no capacity."""
        name = context.node_name(request.node_id)
        public_key = request.keys.public_key
        script = boot_script(context.cluster_id, request.node_id, request.host_key, public_key)

        async def attempt(candidate: Candidate) -> str:
            pod_input: dict[str, Any] = {
                "name": name,
                "imageName": self.image,
                "gpuTypeId": candidate.data["gpuTypeId"],
                "gpuCount": candidate.offer.accelerator_count,
                "cloudType": candidate.data["cloudType"],
                "containerDiskInGb": 40,
                "volumeInGb": 0,
                "supportPublicIp": True,
                "startSsh": True,
                "ports": "22/tcp",
                "dockerArgs": docker_command("SKYWARD_BOOT", "/start.sh"),
                "env": [
                    {"key": "PUBLIC_KEY", "value": public_key},
                    {"key": "SKYWARD_BOOT", "value": encode(script)},
                    {"key": "SKYWARD_CLUSTER", "value": context.cluster_id},
                ],
            }
            if context.spec.region:
                pod_input["dataCenterId"] = context.spec.region
            if candidate.spot:
                pod_input["bidPerGpu"] = candidate.data["bid"]
            query, field_name = (
                (_SPOT, "podRentInterruptable") if candidate.spot
                else (_ON_DEMAND, "podFindAndDeployOnDemand")
            )  # fmt: skip
            data = await self._gql(query, {"input": pod_input}, reconcile=lambda: self._find(name))
            if isinstance(data, str):  # reconciled: the pod the failed attempt made
                return data
            pod = data.get(field_name) or {}
            if not pod.get("id"):
                raise CapacityError(f"runpod: no pod was deployed for {candidate.label()}")
            return str(pod["id"])

        return await self._launch_node(context, request.host_public_key, attempt)

    async def _listed(self) -> list[tuple[str, str]]:
        data = await self._gql(_PODS)
        pods = (data.get("myself") or {}).get("pods") or []
        return [
            (str(p["id"]), str(p.get("name") or ""))
            for p in pods
            if p.get("desiredStatus") != "TERMINATED"
        ]

    async def _instance(self, pod_id: str) -> dict[str, Any] | None:
        """The pod, or None where RunPod answers null or an error on ``pod`` (gone)."""
        data = await self._gql(_POD, {"input": {"podId": pod_id}}, classify=_answer_on("pod"))
        pod = data.get("pod")
        return pod if isinstance(pod, dict) else None

    async def _started(
        self, context: CloudCluster, instance_id: str, pod: dict[str, Any]
    ) -> Instance | None:
        """Running once the pod maps port 22 to a public ip and port."""
        desired = str(pod.get("desiredStatus"))
        state, why = _STATES.get(desired, (InstanceState.PENDING, ""))
        if state is not InstanceState.PENDING and state is not InstanceState.RUNNING:
            raise ProvisionError(
                f"runpod: pod {instance_id} failed while starting: {why} ({desired})"
            )
        for port in (pod.get("runtime") or {}).get("ports") or []:
            if port.get("privatePort") == 22 and port.get("isIpPublic"):
                candidate = context.instances.get(instance_id)
                return await self._running(
                    context,
                    instance_id,
                    str(port["ip"]),
                    int(port["publicPort"]),
                    spot=bool(candidate and candidate.spot),
                    region=candidate.offer.region if candidate else "",
                )
        return None

    async def status(self, context: CloudCluster, instance_id: InstanceId) -> StatusReport:
        """Map the pod's state; an interruptible pod that exited was preempted."""
        pod = await self._instance(instance_id)
        if pod is None:
            return StatusReport(InstanceState.TERMINATED, "runpod: pod not found")
        desired = str(pod.get("desiredStatus"))
        candidate = context.instances.get(instance_id)
        interruptible = pod.get("podType") == "INTERRUPTABLE" or bool(candidate and candidate.spot)
        state, why = _STATES.get(desired, (InstanceState.PENDING, f"unknown status {desired}"))
        if state is InstanceState.RUNNING:
            running = bool((pod.get("runtime") or {}).get("ports"))
            return StatusReport(InstanceState.RUNNING if running else InstanceState.PENDING)
        if desired == "EXITED" and interruptible:
            return StatusReport(
                InstanceState.PREEMPTED, "runpod: interruptible pod exited (outbid or reclaimed)"
            )
        return StatusReport(state, f"runpod: {why} ({desired})")

    async def destroy(self, context: CloudCluster, instance_id: InstanceId) -> None:
        """Terminate the pod and wait until RunPod no longer lists it.

        A refusal to terminate is an error only while the pod is still there: RunPod
        refuses to terminate a pod that is already gone, which is what we want.
        """
        body = await self._api.call(
            "POST",
            "/graphql",
            json={"query": _TERMINATE, "variables": {"input": {"podId": instance_id}}},
            classify=_answer_on("podTerminate"),
        )

        async def gone() -> bool | None:
            pod = await self._instance(instance_id)
            return True if pod is None or pod.get("desiredStatus") == "TERMINATED" else None

        if _errors_on("podTerminate", body) and not await gone():
            raise ProvisionError(
                f"runpod: terminating pod {instance_id} failed: {short_text(body)}"
            )
        await poll_until(gone, 120.0, f"runpod: termination of pod {instance_id}")
        context.instances.pop(instance_id, None)


def _region_free(spec: ClusterSpec) -> ClusterSpec:
    """RunPod filters by data center in the query itself; ``rank`` must not filter again."""
    return replace(spec, region=None)
