"""The ``vastai`` provider: machines rented on Vast.ai's marketplace (REST, httpx).

Base ``https://console.vast.ai/api/v0`` (``SKYWARD_VASTAI_ENDPOINT`` overrides it), key
from ``VAST_API_KEY`` or the Vast CLI's key file (``~/.config/vastai/vast_api_key``, or
the older ``~/.vast_api_key``), sent as a bearer token.

Offers: ``POST /bundles/`` (``type`` on-demand or bid) with the official SDK's default
filters (verified hosts, not external, rentable, not rented) and ``allocated_storage``
set to the disk we rent, so ``dph_total`` is what the machine costs with that disk; one
machine per offer (its ``cpu_ram`` is in MB). A launch rents it with ``PUT /asks/{id}/``
(a ``price`` bid, the machine's ``min_bid``, for interruptible ones) and answers
``no_such_ask`` when someone else got it first: the next offer is tried. Each instance is
labelled ``<cluster id>-n<node>``; one is read with ``owner=me``, as the SDK does.

Cluster resources: the cluster's public key is added to the account (``POST /ssh/``, its
comment names the cluster) and removed at teardown: the key noted by id, and any key
whose comment names the cluster (one added by a kernel killed before it learnt the id).

Host key: Vast runs an ``onstart`` script in the container at start; it installs the
client-generated host key as sshd's only host key and reloads sshd, so the host key is
pinned. Vast's own sshd may start a moment before the script replaces its key; a
connection in that moment fails the pinned check (never trusts), and a retry succeeds.

Preemption: an interruptible (bid) instance that is outbid stops (``actual_status``
exited); ``status_msg`` carries Vast's reason.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...core.provider import ClusterKeys, InstanceState, LaunchRequest, Resources, StatusReport
from ...errors import CapacityError, ProvisionError
from ...events import InstanceId
from ...model import ClusterSpec, Instance, Offer
from ..bootscript import boot_script
from ..cloud import Candidate, accelerator_matches, rank, wanted_gpus
from ..http import short_text
from ..httpcloud import CloudCluster, HttpCloud

__all__ = ["DEFAULT_IMAGE", "VastProvider", "read_api_key"]

ENDPOINT = "https://console.vast.ai/api/v0"
DEFAULT_IMAGE = "pytorch/pytorch:2.4.0-cuda12.4-cudnn9-runtime"
CREDENTIAL = "VAST_API_KEY"
DISK_GB = 40
_GONE = re.compile(r"no_such_ask|not available|unavailable|already rented|no longer", re.I)


def read_api_key() -> str:
    """``VAST_API_KEY``, else the key file the Vast CLI writes (``vastai set api-key``)."""
    key = os.environ.get(CREDENTIAL, "").strip()
    if key:
        return key
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    for path in (Path(config) / "vastai" / "vast_api_key", Path.home() / ".vast_api_key"):
        try:
            key = path.read_text().strip()
        except OSError:
            continue
        if key:
            return key
    return ""


def _classify(status: int, body: Any) -> Exception | None:
    """Vast answers a rented-away offer with 400/404/410 and ``no_such_ask``."""
    if status in (400, 404, 409, 410) and _GONE.search(str(body)):
        return CapacityError(f"vastai: {short_text(body)}")
    if isinstance(body, dict) and body.get("success") is False and _GONE.search(str(body)):
        return CapacityError(f"vastai: {short_text(body)}")
    return None


@dataclass
class VastCluster(CloudCluster):
    """One cluster on Vast.ai: the shared context and the account key's id."""

    ssh_key_id: int | str | None = None


class VastProvider(HttpCloud[VastCluster]):
    """Vast.ai instances behind the provider protocol."""

    name = "vastai"
    context_type = VastCluster
    endpoint = ENDPOINT
    default_image = DEFAULT_IMAGE
    credential = CREDENTIAL
    key_hint = f"{CREDENTIAL} (or run `vastai set api-key`)"
    _classify = staticmethod(_classify)

    def _read_key(self) -> str:
        return read_api_key()

    # -- offers -------------------------------------------------------------------------

    async def _search(self, spec: ClusterSpec, kind: str) -> list[dict[str, Any]]:
        query: dict[str, Any] = {
            "verified": {"eq": True},
            "external": {"eq": False},
            "rentable": {"eq": True},
            "rented": {"eq": False},
            "num_gpus": {"eq": wanted_gpus(spec)},
            "type": kind,
            "allocated_storage": DISK_GB,
            "order": [["dph_total", "asc"]],
            "limit": 64,
        }
        body = await self._api.call("POST", "/bundles/", json=query)
        return list((body or {}).get("offers") or [])

    async def _candidates(self, spec: ClusterSpec) -> list[Candidate]:
        """One offer per machine, with its on-demand and its interruptible price (each
        with the disk), and a candidate per way to rent it that the spot policy allows."""
        kinds = {"always": ["bid"], "never": ["on-demand"]}.get(spec.spot, ["on-demand", "bid"])
        found: dict[str, dict[str, dict[str, Any]]] = {}
        for kind in kinds:
            for row in await self._search(spec, kind):
                if accelerator_matches(spec.accelerator, row.get("gpu_name")):
                    found.setdefault(str(row["id"]), {})[kind] = row
        candidates: list[Candidate] = []
        for ask, rows in found.items():
            row = rows.get("on-demand") or rows["bid"]
            bid_row = rows.get("bid")
            on_demand = row.get("dph_total") if "on-demand" in rows else None
            if on_demand is None:  # searched for spot only: the machine's price plus the disk
                on_demand = float(row.get("dph_base") or 0) + float(
                    row.get("storage_total_cost") or 0
                )
            offer = Offer(
                provider="vastai",
                instance_type=f"{row.get('gpu_name')} x{row.get('num_gpus')} #{ask}",
                accelerator=row.get("gpu_name"),
                accelerator_count=int(row.get("num_gpus") or 0),
                vcpus=float(row.get("cpu_cores_effective") or row.get("cpu_cores") or 0),
                memory_gb=round(float(row.get("cpu_ram") or 0) / 1000, 1),
                price_per_hour=round(float(on_demand), 4),
                spot_price_per_hour=None
                if bid_row is None
                else round(float(bid_row.get("dph_total") or 0), 4),
                region=str(row.get("geolocation") or ""),
            )
            if "on-demand" in rows:
                candidates.append(Candidate(offer, False, {"ask": row["id"], "bid": None}))
            if bid_row is not None and bid_row.get("min_bid") is not None:
                data = {"ask": bid_row["id"], "bid": float(bid_row["min_bid"])}
                candidates.append(Candidate(offer, True, data))
        return rank(candidates, spec)

    # -- lifecycle ----------------------------------------------------------------------

    async def _provision(self, context: VastCluster, keys: ClusterKeys) -> None:
        """Add the cluster's key to the account."""
        context.note("ssh-key", _comment(context.cluster_id))
        body = await self._api.call("POST", "/ssh/", json={"ssh_key": keys.public_key})
        key = (body or {}).get("key", body) if isinstance(body, dict) else None
        if not isinstance(key, dict) or key.get("id") is None:
            raise ProvisionError(f"vastai: adding the SSH key gave no id ({short_text(body)})")
        context.ssh_key_id = key["id"]
        context.note("ssh-key-id", str(key["id"]))

    def _restored(self, context: VastCluster, resources: Resources) -> None:
        noted = resources.get("ssh-key-id") or ()
        context.ssh_key_id = noted[0] if noted else None

    async def launch(self, context: VastCluster, request: LaunchRequest) -> InstanceId:
        """Rent one machine with the onstart script, trying the next offer if it is gone."""
        label = context.node_name(request.node_id)
        script = boot_script(
            context.cluster_id, request.node_id, request.host_key, request.keys.public_key
        )

        async def attempt(candidate: Candidate) -> str:
            body: dict[str, Any] = {
                "client_id": "me",
                "image": self.image,
                "disk": DISK_GB,
                "label": label,
                "onstart": script,
                "runtype": "ssh_direc ssh_proxy",
                "env": {"-p 22:22": "1", "SKYWARD_CLUSTER": context.cluster_id},
                "cancel_unavail": True,
            }
            if candidate.spot:
                body["price"] = candidate.data["bid"]
            answer = await self._api.call(
                "PUT",
                f"/asks/{candidate.data['ask']}/",
                json=body,
                reconcile=lambda: self._find(label),
            )
            if isinstance(answer, str):
                return answer
            if not isinstance(answer, dict) or not answer.get("new_contract"):
                raise CapacityError(f"vastai: the offer was not rented ({short_text(answer)})")
            return str(answer["new_contract"])

        return await self._launch_node(context, request.host_public_key, attempt)

    async def _listed(self) -> list[tuple[str, str]]:
        body = await self._api.call("GET", "/instances/")
        rows = (body or {}).get("instances") or []
        return [(str(row["id"]), str(row.get("label") or "")) for row in rows]

    async def _instance(self, instance_id: str) -> dict[str, Any] | None:
        body = await self._api.call(
            "GET", f"/instances/{instance_id}/", params={"owner": "me"}, missing_ok=True
        )
        row = (body or {}).get("instances") if isinstance(body, dict) else None
        return row if isinstance(row, dict) and row else None

    async def _started(
        self, context: VastCluster, instance_id: str, row: dict[str, Any]
    ) -> Instance | None:
        """Running once it has an SSH address and port."""
        if row.get("actual_status") in ("exited", "stopped", "offline"):
            raise ProvisionError(
                f"vastai: instance {instance_id} stopped while starting "
                f"({row.get('status_msg') or row.get('actual_status')})"
            )
        if row.get("actual_status") != "running":
            return None
        ip, port = _ssh_endpoint(row)
        if not ip or not port:
            return None
        return await self._running(
            context,
            instance_id,
            ip,
            port,
            spot=bool(row.get("is_bid")),
            region=str(row.get("geolocation") or ""),
        )

    async def status(self, context: VastCluster, instance_id: InstanceId) -> StatusReport:
        """Map Vast's state; an interruptible instance that stopped was outbid."""
        row = await self._instance(instance_id)
        if row is None:
            return StatusReport(InstanceState.TERMINATED, "vastai: instance not found")
        actual = row.get("actual_status")
        message = row.get("status_msg") or ""
        if actual == "running":
            return StatusReport(InstanceState.RUNNING)
        if actual in ("exited", "stopped") or row.get("intended_status") == "stopped":
            if row.get("is_bid"):
                return StatusReport(
                    InstanceState.PREEMPTED,
                    f"vastai: interruptible instance stopped: {message or 'outbid'}",
                )
            return StatusReport(InstanceState.STOPPED, f"vastai: {message or actual}")
        return StatusReport(InstanceState.PENDING, f"vastai: {actual or 'starting'}")

    async def destroy(self, context: VastCluster, instance_id: InstanceId) -> None:
        """Destroy the instance and wait until Vast no longer has it."""
        await self._api.call("DELETE", f"/instances/{instance_id}/", missing_ok=True)

        await self._wait_gone(instance_id, 120.0, "destruction")
        context.instances.pop(instance_id, None)

    async def _remove_resources(self, context: VastCluster) -> None:
        """Remove the cluster's account keys (the one noted, and any whose comment names
        the cluster); check they are gone."""
        doomed = [] if context.ssh_key_id is None else [str(context.ssh_key_id)]
        doomed += [i for i in self._keys_of(context, await self._keys()) if i not in doomed]
        for key_id in doomed:
            await self._api.call("DELETE", f"/ssh/{key_id}/", missing_ok=True)
        left = [str(k.get("id")) for k in await self._keys() if str(k.get("id")) in doomed]
        if left:
            raise ProvisionError(f"vastai: SSH key {', '.join(left)} is still there")
        context.ssh_key_id = None

    async def _keys(self) -> list[dict[str, Any]]:
        body = await self._api.call("GET", "/ssh/")
        keys = body if isinstance(body, list) else (body or {}).get("keys") or []
        return [k for k in keys if isinstance(k, dict)]

    @staticmethod
    def _keys_of(context: VastCluster, keys: list[dict[str, Any]]) -> list[str]:
        """The ids of the account keys whose comment names the cluster."""
        comment = _comment(context.cluster_id)
        return [
            str(k.get("id"))
            for k in keys
            if str(k.get("public_key") or k.get("key") or "").split()[2:3] == [comment]
        ]


def _comment(cluster_id: str) -> str:
    """The comment of a cluster's public key (``transport.keys`` writes it so)."""
    return f"skyward-{cluster_id}"


def _ssh_endpoint(row: dict[str, Any]) -> tuple[str, int]:
    """Direct SSH (public ip + the host port mapped to 22), else Vast's SSH address."""
    mapped = (row.get("ports") or {}).get("22/tcp") or []
    if row.get("public_ipaddr") and mapped:
        try:
            return str(row["public_ipaddr"]).strip(), int(mapped[0]["HostPort"])
        except (KeyError, TypeError, ValueError):
            pass
    if row.get("ssh_host") and row.get("ssh_port"):
        return str(row["ssh_host"]), int(row["ssh_port"])
    return "", 0
