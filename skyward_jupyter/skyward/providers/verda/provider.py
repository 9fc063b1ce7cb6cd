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

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ...core.provider import InstanceState, StatusReport, first
from ...errors import ProvisionError
from ..bootscript import boot_script
from ..httpcloud import CloudCluster, HttpCloud
from .api import CREDENTIAL, ENDPOINT, TokenAuth, classify, text_id
from .catalog import GONE_STATES, STATES, candidates

if TYPE_CHECKING:
    from ...core.provider import ClusterKeys, LaunchRequest, Resources
    from ...events import InstanceId
    from ...model import ClusterSpec, Instance
    from ..cloud import Candidate

__all__ = ["DEFAULT_IMAGE", "VerdaCluster", "VerdaProvider"]

DEFAULT_IMAGE = "ubuntu-22.04-cuda-12.4-docker"


@dataclass
class VerdaCluster(CloudCluster):
    """One cluster on Verda: the shared context, its SSH key and its nodes' scripts."""

    ssh_key_id: str | None = None
    scripts: dict[str, str] = field(default_factory=dict)  # instance id -> script id

    @property
    def key_name(self) -> str:
        return f"skyward-{self.cluster_id}"


class VerdaProvider(HttpCloud[VerdaCluster]):
    """Verda VMs behind the provider protocol."""

    name = "verda"
    context_type = VerdaCluster
    endpoint = ENDPOINT
    default_image = DEFAULT_IMAGE
    credential = CREDENTIAL
    _classify = staticmethod(classify)

    def __init__(
        self,
        client_id: str | None = None,
        client_secret: str | None = None,
        endpoint: str | None = None,
        image: str | None = None,
        **client_options: Any,
    ) -> None:
        self._connect(endpoint, image, client_options)
        self._auth = TokenAuth(self._api.base_url, client_id, client_secret, **client_options)

    async def _headers(self) -> dict[str, str]:
        return await self._auth.headers()

    # -- offers -------------------------------------------------------------------------

    async def _candidates(self, spec: ClusterSpec) -> list[Candidate]:
        """Instance types crossed with where each is available now, per market."""
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
        return candidates(list(kinds or []), where, spec)

    # -- lifecycle ----------------------------------------------------------------------

    async def _provision(self, context: VerdaCluster, keys: ClusterKeys) -> None:
        """Register the cluster's SSH key."""
        context.note("ssh-key", context.key_name)
        key_id = await self._api.call(
            "POST", "/sshkeys", json={"name": context.key_name, "key": keys.public_key}
        )
        context.ssh_key_id = text_id(key_id, "SSH key")
        context.note("ssh-key-id", context.ssh_key_id)

    def _restored(self, context: VerdaCluster, resources: Resources) -> None:
        """The SSH key's id as noted (scripts and volumes are found by name)."""
        context.ssh_key_id = first(resources, "ssh-key-id") or None

    async def launch(self, context: VerdaCluster, request: LaunchRequest) -> InstanceId:
        """Create the node's startup script, then the VM, trying the next offer if full."""
        hostname = context.node_name(request.node_id)
        script = boot_script(
            context.cluster_id, request.node_id, request.host_key, request.keys.public_key
        )
        if context.ssh_key_id is None:  # restored without a noted id: find it by name
            keys = await self._api.call("GET", "/sshkeys") or []
            found = [str(k["id"]) for k in keys if k.get("name") == context.key_name]
            if not found:
                raise ProvisionError(f"verda: the SSH key {context.key_name} is gone")
            context.ssh_key_id = found[0]
        context.note("startup-script", f"skyward-{hostname}")
        script_id = text_id(
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
            return text_id(answer, "instance")

        try:
            instance_id = await self._launch_node(context, request.host_public_key, attempt)
        except BaseException:
            await self._api.call("DELETE", f"/scripts/{script_id}", missing_ok=True)
            raise
        context.scripts[instance_id] = script_id
        return instance_id

    async def _listed(self) -> list[tuple[str, str]]:
        rows = await self._api.call("GET", "/instances") or []
        return [
            (str(row["id"]), str(row.get("hostname") or ""))
            for row in rows
            if row.get("status") not in GONE_STATES
        ]

    async def _instance(self, instance_id: str) -> dict[str, Any] | None:
        row = await self._api.call("GET", f"/instances/{instance_id}", missing_ok=True)
        if not isinstance(row, dict) or row.get("status") in GONE_STATES:
            return None
        return row

    async def _started(
        self, context: VerdaCluster, instance_id: str, row: dict[str, Any]
    ) -> Instance | None:
        """Running once the VM runs and has an IP (SSH is on port 22)."""
        status = str(row.get("status"))
        if STATES.get(status, InstanceState.PENDING) not in (
            InstanceState.PENDING, InstanceState.RUNNING,
        ):  # fmt: skip
            raise ProvisionError(f"verda: instance {instance_id} is {status} while starting")
        ip = row.get("ip")
        if status != "running" or not ip:
            return None
        return await self._running(
            context,
            instance_id,
            str(ip),
            22,
            spot=bool(row.get("is_spot")),
            region=str(row.get("location") or ""),
        )

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
        state = STATES.get(status, InstanceState.PENDING)
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

        await self._wait_gone(instance_id, 180.0, "deletion")
        script_id = context.scripts.pop(instance_id, None)
        if script_id is not None:
            await self._api.call("DELETE", f"/scripts/{script_id}", missing_ok=True)
        context.instances.pop(instance_id, None)

    async def _remove_resources(self, context: VerdaCluster) -> None:
        """Delete the cluster's leftover OS volumes, its scripts and its SSH keys (by id
        and by name); check that none is left."""
        prefix = context.prefix
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
