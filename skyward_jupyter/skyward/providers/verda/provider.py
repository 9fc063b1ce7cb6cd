"""The ``verda`` provider (formerly DataCrunch): GPU VMs through Verda's REST API (httpx).

Base ``https://api.verda.com/v1`` (``SKYWARD_VERDA_ENDPOINT`` overrides it). Credentials:
``VERDA_CLIENT_ID`` and ``VERDA_CLIENT_SECRET``, exchanged for a bearer token at
``POST /oauth2/token`` (OAuth2 client credentials), renewed before it expires.

Offers: ``GET /instance-types?currency=usd`` (GPU model and count, vCPUs, memory,
on-demand and spot price, in USD) crossed with ``GET /instance-availability?isSpot=…``
(which types each location has now, spot and on-demand apart: the spelling of the
official SDK). VMs are launched with ``POST /instances`` (``is_spot`` for spot), named
``<cluster id>-n<node>`` (hostname) and described with the cluster id; the OS volume of
a spot VM is deleted with it when Verda reclaims it (``on_spot_discontinue:
delete_permanently``), and ours deletes it with the VM, so no volume is left billing.

Cluster resources: an SSH key (``POST /sshkeys``, named ``skyward-<cluster id>``) for the
cluster, and one startup script per node (``POST /scripts``, ``skyward-<cluster>-n<node>``);
both are deleted at teardown (a node's script also when the node is destroyed), found by
name, so also those a kernel killed mid-call made; so is any OS volume of the cluster's
VMs (``<cluster>-n<node>-os``) that outlived its VM.

Host key: the startup script installs the client-generated host key as sshd's only host
key and restarts sshd; the node is reported running only once it presents that key, so
the host key is pinned. Verda reports only an IP: SSH is on port 22.

States: every instance status of the official SDKs (Python ``InstanceStatus``, Go
``Status*``) is mapped in ``_STATES``. A spot VM that Verda reclaims reads as
``discontinued`` or is gone (404): either is preemption.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from typing import Any

from ...core.provider import (
    ClusterKeys,
    InstanceState,
    LaunchRequest,
    ResourceNote,
    Resources,
    StatusReport,
    first,
    no_note,
)
from ...errors import CapacityError, ProvisionError
from ...events import InstanceId, ProviderName
from ...model import ClusterSpec, Instance, Offer
from ..bootscript import boot_script
from ..cloud import (
    Candidate,
    accelerator_matches,
    describe_request,
    host_key_installed,
    launch_with_fallback,
    poll_until,
    rank,
)
from ..http import ApiClient, env_endpoint, short_text

__all__ = ["DEFAULT_IMAGE", "VerdaProvider"]

ENDPOINT = "https://api.verda.com/v1"
DEFAULT_IMAGE = "ubuntu-22.04-cuda-12.4-docker"
CREDENTIAL = "VERDA_CLIENT_ID and VERDA_CLIENT_SECRET"
_CAPACITY = re.compile(
    r"not enough resources|capacity|not available|no .*available"
    r"|insufficient (resources|capacity)|out of stock",
    re.I,
)
_GONE_STATES = {"deleted", "notfound"}
_STATES: dict[str, InstanceState] = {
    "new": InstanceState.PENDING,
    "ordered": InstanceState.PENDING,
    "provisioning": InstanceState.PENDING,
    "validating": InstanceState.PENDING,
    "pending": InstanceState.PENDING,
    "restoring": InstanceState.PENDING,
    "unknown": InstanceState.PENDING,
    "running": InstanceState.RUNNING,
    "offline": InstanceState.STOPPED,
    "starting_hibernation": InstanceState.STOPPED,
    "hibernating": InstanceState.STOPPED,
    "error": InstanceState.STOPPED,
    "no_capacity": InstanceState.STOPPED,
    "discontinued": InstanceState.TERMINATED,
    "deleting": InstanceState.TERMINATED,
    "deleted": InstanceState.TERMINATED,
    "notfound": InstanceState.TERMINATED,
}
"""Verda's instance statuses -> ours (a spot VM that is discontinued or gone: preempted)."""


def _classify(status: int, body: Any) -> Exception | None:
    """Verda refuses a launch it has no machine for with a 4xx or a 503 that says so
    ("Not enough resources to deploy …"): a capacity error, not one to retry."""
    if status in (400, 409, 422, 503) and _CAPACITY.search(short_text(body)):
        return CapacityError(f"verda: {short_text(body)}")
    return None


def _token_classify(status: int, body: Any) -> Exception | None:
    """A refused client id or secret is a 400/401 from the token endpoint."""
    if status in (400, 401, 403):
        return ProvisionError(
            f"verda rejected the credentials ({short_text(body)}): check {CREDENTIAL}"
        )
    return None


def _gpu_model(kind: dict[str, Any]) -> str | None:
    """The GPU's name as shown: ``name`` (``'A100 SXM4 80GB'``), else ``model``
    (``'A100'``), else the description without its count (``'8x H100'`` → ``'H100'``);
    None for a CPU-only type."""
    names = _gpu_names(kind)
    return names[0] if names else None


def _gpu_names(kind: dict[str, Any]) -> list[str]:
    """Every name Verda gives the type's GPU, most descriptive first (empty: no GPU)."""
    gpu = kind.get("gpu") or {}
    if not gpu.get("number_of_gpus"):
        return []
    described = re.sub(r"^\s*\d+\s*x\s*", "", str(gpu.get("description") or "")).strip()
    found = [str(kind.get(key) or "").strip() for key in ("name", "model", "display_name")]
    return [name for name in [*found, described] if name]


@dataclass
class VerdaCluster:
    """The context of one cluster: its key, scripts, candidates and instances."""

    cluster_id: str
    spec: ClusterSpec
    candidates: list[Candidate]
    ssh_key_id: str | None = None
    scripts: dict[str, str] = field(default_factory=dict)  # instance id -> script id
    host_keys: dict[str, str] = field(default_factory=dict)
    start: int = 0
    instances: dict[str, Candidate] = field(default_factory=dict)
    note: ResourceNote = field(default=no_note, repr=False)

    @property
    def key_name(self) -> str:
        return f"skyward-{self.cluster_id}"


class VerdaProvider:
    """Verda VMs behind the provider protocol."""

    name: ProviderName = "verda"
    ssh_user = "root"

    def __init__(
        self,
        client_id: str | None = None,
        client_secret: str | None = None,
        endpoint: str | None = None,
        image: str | None = None,
        **client_options: Any,
    ) -> None:
        self._id = client_id or os.environ.get("VERDA_CLIENT_ID", "").strip()
        self._secret = client_secret or os.environ.get("VERDA_CLIENT_SECRET", "").strip()
        if not self._id or not self._secret:
            raise ProvisionError(f"verda: no credentials: set {CREDENTIAL}")
        self.image = image or os.environ.get("SKYWARD_VERDA_IMAGE") or DEFAULT_IMAGE
        base = endpoint or env_endpoint("SKYWARD_VERDA_ENDPOINT", ENDPOINT)
        self._token_api = ApiClient(
            "verda", base, CREDENTIAL, classify=_token_classify, **client_options
        )
        self._api = ApiClient(
            "verda", base, CREDENTIAL, auth=self._headers, classify=_classify, **client_options
        )
        self._token: tuple[str, float] | None = None

    async def _headers(self) -> dict[str, str]:
        token = self._token
        if token is None or time.monotonic() > token[1]:
            body = await self._token_api.call(
                "POST",
                "/oauth2/token",
                json={
                    "grant_type": "client_credentials",
                    "client_id": self._id,
                    "client_secret": self._secret,
                },
            )
            if not isinstance(body, dict) or not body.get("access_token"):
                raise ProvisionError(f"verda: the token endpoint gave no token: check {CREDENTIAL}")
            lifetime = float(body.get("expires_in") or 3600)
            token = (str(body["access_token"]), time.monotonic() + max(30.0, lifetime - 60))
            self._token = token
        return {"Authorization": f"Bearer {token[0]}"}

    # -- offers -------------------------------------------------------------------------

    async def _candidates(self, spec: ClusterSpec) -> list[Candidate]:
        kinds = await self._api.call("GET", "/instance-types", params={"currency": "usd"})
        other = {
            str(k.get("currency")) for k in kinds or [] if k.get("currency") not in (None, "usd")
        }
        if other:
            raise ProvisionError(f"verda: prices came in {', '.join(sorted(other))}, not usd")
        spots = {"always": [True], "never": [False]}.get(spec.spot, [False, True])
        where: dict[bool, dict[str, list[str]]] = {}
        for spot in spots:
            rows = await self._api.call(
                "GET", "/instance-availability", params={"isSpot": str(spot).lower()}
            )
            per_type: dict[str, list[str]] = {}
            for row in rows or []:
                for name in row.get("availabilities") or []:
                    per_type.setdefault(name, []).append(str(row.get("location_code")))
            where[spot] = per_type
        found: list[Candidate] = []
        for kind in kinds or []:
            model = _gpu_model(kind)
            count = int((kind.get("gpu") or {}).get("number_of_gpus") or 0)
            if spec.accelerator_count and count != spec.accelerator_count:
                continue
            if spec.accelerator and not any(
                accelerator_matches(spec.accelerator, name) for name in _gpu_names(kind)
            ):
                continue
            name = str(kind["instance_type"])
            spot_price = kind.get("spot_price")
            for spot in spots:
                if spot and spot_price in (None, "", 0):
                    continue
                for location in where[spot].get(name, []):
                    offer = Offer(
                        provider="verda",
                        instance_type=name,
                        accelerator=model,
                        accelerator_count=count,
                        vcpus=float((kind.get("cpu") or {}).get("number_of_cores") or 0),
                        memory_gb=float((kind.get("memory") or {}).get("size_in_gigabytes") or 0),
                        price_per_hour=float(kind.get("price_per_hour") or 0),
                        spot_price_per_hour=None if spot_price is None else float(spot_price),
                        region=location,
                    )
                    found.append(Candidate(offer, spot, {"location": location}))
        return rank(found, spec)

    async def offers(self, spec: ClusterSpec) -> list[Offer]:
        """Instance types available now that match ``spec``, per location, cheapest first."""
        seen: dict[tuple[str, str], Offer] = {}
        for c in await self._candidates(spec):
            seen.setdefault((c.offer.instance_type, c.offer.region), c.offer)
        return list(seen.values())

    # -- lifecycle ----------------------------------------------------------------------

    async def prepare(
        self, cluster_id: str, spec: ClusterSpec, keys: ClusterKeys, note: ResourceNote = no_note
    ) -> Any:
        """Find the offers, then register the cluster's SSH key."""
        candidates = await self._candidates(spec)
        if not candidates:
            raise CapacityError(f"verda: no offer matches {describe_request(spec)}")
        context = VerdaCluster(cluster_id, spec, candidates, note=note)
        note("ssh-key", context.key_name)
        key_id = await self._api.call(
            "POST", "/sshkeys", json={"name": context.key_name, "key": keys.public_key}
        )
        context.ssh_key_id = _text_id(key_id, "SSH key")
        note("ssh-key-id", context.ssh_key_id)
        return context

    async def restore(
        self, cluster_id: str, spec: ClusterSpec, resources: Resources, note: ResourceNote = no_note
    ) -> Any:
        """The context of an existing cluster, with its SSH key's id as noted (its
        scripts and volumes are found by name when they are deleted)."""
        context = VerdaCluster(cluster_id, spec, [], note=note)
        context.ssh_key_id = first(resources, "ssh-key-id") or None
        return context

    async def launch(self, context: VerdaCluster, request: LaunchRequest) -> InstanceId:
        """Create the node's startup script, then the VM, trying the next offer if full."""
        hostname = f"{context.cluster_id}-n{request.node_id}"
        script = boot_script(
            context.cluster_id, request.node_id, request.host_key, request.keys.public_key
        )
        if not context.candidates:  # a restored context: offers are found when needed
            context.candidates = await self._candidates(context.spec)
        if context.ssh_key_id is None:  # restored without a noted id: find it by name
            keys = await self._api.call("GET", "/sshkeys") or []
            found = [str(k["id"]) for k in keys if k.get("name") == context.key_name]
            if not found:
                raise ProvisionError(f"verda: the SSH key {context.key_name} is gone")
            context.ssh_key_id = found[0]
        context.note("startup-script", f"skyward-{hostname}")
        script_id = _text_id(
            await self._api.call(
                "POST", "/scripts", json={"name": f"skyward-{hostname}", "script": script}
            ),
            "startup script",
        )
        context.note("volume", f"{hostname}-os")

        async def attempt(candidate: Candidate) -> str:
            body = {
                "instance_type": candidate.offer.instance_type,
                "image": self.image,
                "ssh_key_ids": [context.ssh_key_id],
                "startup_script_id": script_id,
                "hostname": hostname,
                "description": f"skyward cluster {context.cluster_id} node {request.node_id}",
                "location_code": candidate.data["location"],
                "is_spot": candidate.spot,
                "os_volume": {
                    "name": f"{hostname}-os",
                    "size": 50,
                    "on_spot_discontinue": "delete_permanently",
                },
            }
            answer = await self._api.call(
                "POST", "/instances", json=body, reconcile=lambda: self._find(hostname)
            )
            return _text_id(answer, "instance")

        try:
            instance_id, index = await launch_with_fallback(
                "verda", context.candidates, context.start, attempt
            )
        except BaseException:
            await self._api.call("DELETE", f"/scripts/{script_id}", missing_ok=True)
            raise
        context.start = index
        context.instances[instance_id] = context.candidates[index]
        context.scripts[instance_id] = script_id
        context.host_keys[instance_id] = request.host_public_key
        return instance_id

    async def _list(self) -> list[dict[str, Any]]:
        return list(await self._api.call("GET", "/instances") or [])

    async def _find(self, hostname: str) -> str | None:
        """The id of a VM called ``hostname`` (a launch whose answer was lost)."""
        for row in await self._list():
            if row.get("hostname") == hostname and row.get("status") not in _GONE_STATES:
                return str(row["id"])
        return None

    async def _instance(self, instance_id: str) -> dict[str, Any] | None:
        row = await self._api.call("GET", f"/instances/{instance_id}", missing_ok=True)
        if not isinstance(row, dict) or row.get("status") in _GONE_STATES:
            return None
        return row

    async def wait_running(
        self, context: VerdaCluster, instance_id: InstanceId, timeout: float
    ) -> Instance:
        """Poll until the VM runs, has an IP, and its sshd presents the pinned host key."""

        async def ready() -> Instance | None:
            row = await self._instance(instance_id)
            if row is None:
                raise ProvisionError(f"verda: instance {instance_id} disappeared while starting")
            status = str(row.get("status"))
            if _STATES.get(status, InstanceState.PENDING) not in (
                InstanceState.PENDING, InstanceState.RUNNING,
            ):  # fmt: skip
                raise ProvisionError(f"verda: instance {instance_id} is {status} while starting")
            ip = row.get("ip")
            if status != "running" or not ip:
                return None
            expected = context.host_keys.get(instance_id)
            if expected and not await host_key_installed(ip, 22, expected):
                return None
            candidate = context.instances.get(instance_id)
            return Instance(
                id=instance_id,
                status="running",
                ip=str(ip),
                ssh_port=22,
                spot=bool(row.get("is_spot")),
                region=str(row.get("location") or ""),
                offer=candidate.offer if candidate else None,
            )

        return await poll_until(ready, timeout, f"verda: instance {instance_id} running")

    async def status(self, context: VerdaCluster, instance_id: InstanceId) -> StatusReport:
        """Map Verda's state; a spot VM that is discontinued or gone was reclaimed."""
        row = await self._api.call("GET", f"/instances/{instance_id}", missing_ok=True)
        candidate = context.instances.get(instance_id)
        spot = (
            bool(row.get("is_spot"))
            if isinstance(row, dict)
            else bool(candidate and candidate.spot)
        )
        status = str(row.get("status")) if isinstance(row, dict) else "notfound"
        state = _STATES.get(status, InstanceState.PENDING)
        if state is InstanceState.TERMINATED and spot:
            return StatusReport(
                InstanceState.PREEMPTED, f"verda: spot instance {status} (reclaimed)"
            )
        if state is InstanceState.RUNNING:
            return StatusReport(state)
        return StatusReport(state, f"verda: {status}")

    async def destroy(self, context: VerdaCluster, instance_id: InstanceId) -> None:
        """Delete the VM and its OS volume (for good, not to the trash), wait until it is
        gone, then delete its startup script."""
        row = await self._instance(instance_id)
        action: dict[str, Any] = {"action": "delete", "id": [instance_id]}
        if row is not None and row.get("os_volume_id"):
            action.update(volume_ids=[row["os_volume_id"]], delete_permanently=True)
        if row is not None:
            await self._api.call("PUT", "/instances", json=action, missing_ok=True)

        async def gone() -> bool | None:
            return True if await self._instance(instance_id) is None else None

        await poll_until(gone, 180.0, f"verda: deletion of instance {instance_id}")
        script_id = context.scripts.pop(instance_id, None)
        if script_id is not None:
            await self._api.call("DELETE", f"/scripts/{script_id}", missing_ok=True)
        context.instances.pop(instance_id, None)

    async def teardown(self, context: VerdaCluster) -> None:
        """Delete VMs still named after the cluster, then its leftover OS volumes, its
        scripts and its SSH keys (by id and by name); check that none is left."""
        prefix = f"{context.cluster_id}-n"
        for row in await self._list():
            if str(row.get("hostname") or "").startswith(prefix) and (
                row.get("status") not in _GONE_STATES
            ):
                await self.destroy(context, str(row["id"]))
        for volume_id in await self._volumes_of(context):
            await self._api.call(
                "DELETE", f"/volumes/{volume_id}", json={"is_permanent": True}, missing_ok=True
            )
        for script in await self._api.call("GET", "/scripts") or []:
            if str(script.get("name") or "").startswith(f"skyward-{prefix}"):
                await self._api.call("DELETE", f"/scripts/{script['id']}", missing_ok=True)
        keys = await self._api.call("GET", "/sshkeys") or []
        doomed = [k["id"] for k in keys if k.get("name") == context.key_name]
        if context.ssh_key_id is not None and context.ssh_key_id not in doomed:
            doomed.append(context.ssh_key_id)
        for key_id in doomed:
            await self._api.call("DELETE", f"/sshkeys/{key_id}", missing_ok=True)
        keys = await self._api.call("GET", "/sshkeys") or []
        scripts = await self._api.call("GET", "/scripts") or []
        left = [k["id"] for k in keys if k.get("name") == context.key_name]
        left += [s["id"] for s in scripts if str(s.get("name", "")).startswith(f"skyward-{prefix}")]
        left += await self._volumes_of(context)
        if left:
            raise ProvisionError(f"verda: cluster resources still there: {', '.join(left)}")
        context.ssh_key_id = None

    async def _volumes_of(self, context: VerdaCluster) -> list[str]:
        """The ids of the cluster's OS volumes still billed (their VM is gone)."""
        pattern = re.compile(rf"{re.escape(context.cluster_id)}-n\d+-os")
        rows = await self._api.call("GET", "/volumes") or []
        return [
            str(v["id"])
            for v in rows
            if isinstance(v, dict)
            and pattern.fullmatch(str(v.get("name") or ""))
            and v.get("status") not in ("deleted",)
        ]


def _text_id(body: Any, what: str) -> str:
    """Verda answers a create with the new id as plain text (or a JSON string)."""
    if isinstance(body, str) and body.strip():
        return body.strip().strip('"')
    if isinstance(body, int) and not isinstance(body, bool):
        return str(body)  # a plain-text id that happens to be all digits parses as a number
    if isinstance(body, dict) and body.get("id"):
        return str(body["id"])
    raise ProvisionError(f"verda: creating the {what} gave no id ({short_text(body)})")
