"""A local Vast.ai REST API (``/api/v0`` shapes) on 127.0.0.1.

Supported: ``POST /bundles/`` (offers; ``num_gpus``, ``type`` on-demand/bid), ``PUT
/asks/{id}/`` (rent: ``new_contract``; refused with 404 ``no_such_ask``), ``GET
/instances/`` and ``GET /instances/{id}/`` (``{"instances": ...}`` with actual_status,
ssh_host, ssh_port, public_ipaddr, ports, is_bid, status_msg), ``DELETE
/instances/{id}/``, and account SSH keys ``POST/GET /ssh/``, ``DELETE /ssh/{id}/``. A bad
key is HTTP 401. Each instance is backed by a real local node started from its
``onstart`` script.

Faults: ``fail_with("429")``, ``fail_with("500")``, ``refuse_capacity(n)``, ``preempt(id)``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ..simbase import Reply, Request, Simulator

API_KEY = "vast-test-key"

# gpu_name, per-GPU on-demand price, per-GPU minimum bid, where
MACHINES = [
    ("A100 SXM4", 1.10, 0.55, "Texas, US"),
    ("A100 PCIE", 0.95, 0.50, "Quebec, CA"),
    ("RTX 4090", 0.35, 0.18, "Norway, NO"),
    ("H100 SXM", 2.40, 1.30, "Iceland, IS"),
]


@dataclass
class VastInstance:
    id: int
    label: str
    offer: dict[str, Any]
    is_bid: bool
    actual: str = "loading"
    intended: str = "running"
    status_msg: str = ""
    ip: str = ""
    port: int = 0

    def json(self) -> dict[str, Any]:
        row = {
            "id": self.id,
            "label": self.label,
            "actual_status": self.actual,
            "intended_status": self.intended,
            "cur_state": self.intended,
            "status_msg": self.status_msg,
            "is_bid": self.is_bid,
            "gpu_name": self.offer["gpu_name"],
            "num_gpus": self.offer["num_gpus"],
            "dph_total": self.offer["dph_total"],
            "geolocation": self.offer["geolocation"],
            "ssh_host": self.ip or None,
            "ssh_port": self.port or None,
            "public_ipaddr": self.ip or None,
            "ports": {"22/tcp": [{"HostIp": "0.0.0.0", "HostPort": str(self.port)}]}
            if self.port
            else {},
        }
        return row


class VastSimulator(Simulator):
    """Vast.ai's REST API on 127.0.0.1."""

    name = "vastai"

    def __init__(self) -> None:
        self.instances: dict[int, VastInstance] = {}
        self.ssh_keys: dict[int, str] = {}
        self.offers = self._make_offers()
        super().__init__()

    @staticmethod
    def _make_offers() -> list[dict[str, Any]]:
        rows, ask = [], 5000
        for gpu, price, bid, where in MACHINES:
            for count in (1, 2, 4, 8):
                ask += 1
                rows.append({
                    "id": ask, "ask_contract_id": ask, "machine_id": ask * 10,
                    "gpu_name": gpu, "num_gpus": count,
                    "cpu_cores": 16 * count, "cpu_cores_effective": 8 * count,
                    "cpu_ram": 64000 * count, "gpu_ram": 81920,
                    "dph_total": round(price * count, 3), "min_bid": round(bid * count, 3),
                    "geolocation": where, "reliability2": 0.99, "rentable": True,
                })  # fmt: skip
        return rows

    def preempt(self, instance_id: str) -> None:
        """Outbid an interruptible instance: Vast stops it and says why."""
        self.stop_backing(instance_id)
        with self.lock:
            inst = self.instances[int(instance_id)]
            inst.actual, inst.intended = "exited", "stopped"
            inst.status_msg = "Instance stopped: outbid by a higher bid (interruptible)"
            inst.ip, inst.port = "", 0

    def handle(self, request: Request) -> Reply:
        if not request.path.startswith("/api/v0/"):
            return Reply(404, {"error": "not found"})
        if request.headers.get("Authorization") != f"Bearer {API_KEY}":
            return Reply(401, {"success": False, "error": "auth_error", "msg": "Invalid api key"})
        path = request.path[len("/api/v0") :]
        method = request.method
        if method == "POST" and path == "/bundles/":
            return self._search(request.body or {})
        if method == "PUT" and (m := re.fullmatch(r"/asks/(\d+)/", path)):
            return self._rent(int(m[1]), request.body or {})
        if method == "GET" and path == "/instances/":
            with self.lock:
                return Reply(200, {"instances": [i.json() for i in self.instances.values()]})
        if m := re.fullmatch(r"/instances/(\d+)/", path):
            with self.lock:
                inst = self.instances.get(int(m[1]))
            if inst is None:
                return Reply(404, {"success": False, "error": "no_such_instance"})
            if method == "GET":
                return Reply(200, {"instances": inst.json()})
            if method == "DELETE":
                self.stop_backing(m[1])
                with self.lock:
                    self.instances.pop(inst.id, None)
                return Reply(200, {"success": True})
        if path == "/ssh/" and method == "POST":
            with self.lock:
                key_id = self.new_id()
                self.ssh_keys[key_id] = (request.body or {})["ssh_key"]
            return Reply(200, {"success": True, "key": {"id": key_id, "public_key": "…"}})
        if path == "/ssh/" and method == "GET":
            with self.lock:
                return Reply(200, [{"id": k, "public_key": v} for k, v in self.ssh_keys.items()])
        if method == "DELETE" and (m := re.fullmatch(r"/ssh/(\d+)/", path)):
            with self.lock:
                found = self.ssh_keys.pop(int(m[1]), None)
            return Reply(200 if found else 404, {"success": found is not None})
        return Reply(404, {"success": False, "error": "not_found", "msg": path})

    def _search(self, query: dict[str, Any]) -> Reply:
        wanted = (query.get("num_gpus") or {}).get("eq")
        rows = [o for o in self.offers if wanted is None or o["num_gpus"] == wanted]
        key = "min_bid" if query.get("type") == "bid" else "dph_total"
        return Reply(200, {"offers": sorted(rows, key=lambda o: o[key])})

    def _rent(self, ask: int, body: dict[str, Any]) -> Reply:
        offer = next((o for o in self.offers if o["id"] == ask), None)
        if offer is None or self.take_capacity_refusal():
            return Reply(
                404,
                {"success": False, "error": "no_such_ask",
                 "msg": "Instance type no longer available."},
            )  # fmt: skip
        is_bid = body.get("price") is not None
        with self.lock:
            inst = VastInstance(self.new_id(), body.get("label", ""), offer, is_bid)
            self.instances[inst.id] = inst

        def ready(host: str, port: int) -> None:
            with self.lock:
                if inst.actual == "loading":
                    inst.actual, inst.ip, inst.port = "running", host, port

        self.start_backing(str(inst.id), inst.id, body["onstart"], ready)
        return Reply(200, {"success": True, "new_contract": inst.id})


def api_base(sim: VastSimulator) -> str:
    """The value of ``SKYWARD_VASTAI_ENDPOINT`` for this simulator."""
    return sim.url + "/api/v0"
