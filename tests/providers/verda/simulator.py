"""A local Verda (formerly DataCrunch) REST API (``/v1`` shapes) on 127.0.0.1.

Supported: ``POST /oauth2/token`` (client credentials; 401 when wrong), ``GET
/instance-types``, ``GET /instance-availability?is_spot=``, ``POST/GET /sshkeys``,
``DELETE /sshkeys/{id}``, ``POST/GET /scripts``, ``DELETE /scripts/{id}``, ``POST
/instances`` (the new id as plain text; refused with 400 and a capacity message), ``GET
/instances``, ``GET /instances/{id}`` (404 once deleted) and ``PUT /instances`` with
``{"action": "delete", "id": [...]}``. Each VM is backed by a real local node started from
its startup script (looked up by ``startup_script_id``) and listening on port 22 of its own
127.0.0.x address, since Verda reports only an IP.

Faults: ``fail_with("429")``, ``fail_with("500")``, ``refuse_capacity(n)``, ``preempt(id)``.
"""

from __future__ import annotations

import re
import secrets
import uuid
from dataclasses import dataclass
from typing import Any

from ..simbase import Reply, Request, Simulator

CLIENT_ID = "verda-test-client"
CLIENT_SECRET = "verda-test-secret"

# instance_type, GPU description, GPUs, vCPUs, RAM GB, price, spot price
TYPES = [
    ("1A100.22V", "1x A100 SXM4 80GB", 1, 22, 120, 1.29, 0.52),
    ("2A100.44V", "2x A100 SXM4 80GB", 2, 44, 240, 2.58, 1.04),
    ("4A100.88V", "4x A100 SXM4 80GB", 4, 88, 480, 5.16, 2.08),
    ("2H100.80S.60V", "2x H100 SXM5 80GB", 2, 60, 370, 5.00, 2.10),
    ("1RTX6000ADA.10V", "1x RTX 6000 Ada 48GB", 1, 10, 60, 0.89, 0.35),
    ("CPU.4V.16G", "", 0, 4, 16, 0.03, None),
]
AVAILABLE = {
    False: {"FIN-01": [t[0] for t in TYPES], "ICE-01": ["2A100.44V", "4A100.88V"]},
    True: {"FIN-01": ["1A100.22V", "2A100.44V", "1RTX6000ADA.10V"]},
}


@dataclass
class VerdaVM:
    id: str
    hostname: str
    instance_type: str
    location: str
    is_spot: bool
    price: float
    status: str = "provisioning"
    ip: str = ""

    def json(self) -> dict[str, Any]:
        kind = next(t for t in TYPES if t[0] == self.instance_type)
        return {
            "id": self.id,
            "instance_type": self.instance_type,
            "image": "ubuntu-22.04-cuda-12.4-docker",
            "price_per_hour": self.price,
            "hostname": self.hostname,
            "description": f"{self.hostname}",
            "ip": self.ip or None,
            "status": self.status,
            "created_at": "2025-01-01T00:00:00Z",
            "ssh_key_ids": [],
            "cpu": {"description": f"{kind[3]} CPU", "number_of_cores": kind[3]},
            "gpu": {"description": kind[1], "number_of_gpus": kind[2]},
            "memory": {"description": f"{kind[4]} GB", "size_in_gigabytes": kind[4]},
            "storage": {"description": "dynamic"},
            "location": self.location,
            "is_spot": self.is_spot,
        }


class VerdaSimulator(Simulator):
    """Verda's REST API on 127.0.0.1; nodes listen on port 22."""

    name = "verda"

    def __init__(self) -> None:
        self.vms: dict[str, VerdaVM] = {}
        self.ssh_keys: dict[str, dict[str, str]] = {}
        self.scripts: dict[str, dict[str, str]] = {}
        self.tokens: set[str] = set()
        super().__init__(ssh_port=22)

    def preempt(self, instance_id: str) -> None:
        """Reclaim a spot VM: Verda discontinues it."""
        self.stop_backing(instance_id)
        with self.lock:
            vm = self.vms[instance_id]
            vm.status, vm.ip = "discontinued", ""

    def handle(self, request: Request) -> Reply:
        if not request.path.startswith("/v1/"):
            return Reply(404, {"code": "not_found", "message": "not found"})
        path, method, body = request.path[len("/v1") :], request.method, request.body
        if path == "/oauth2/token" and method == "POST":
            return self._token(body or {})
        auth = request.headers.get("Authorization", "")
        if auth.removeprefix("Bearer ") not in self.tokens:
            return Reply(401, {"code": "unauthorized_request", "message": "Invalid token"})
        if path == "/instance-types" and method == "GET":
            return Reply(200, [_type_json(t) for t in TYPES])
        if path == "/instance-availability" and method == "GET":
            spot = request.query.get("is_spot") == "true"
            return Reply(200, [{"location_code": loc, "availabilities": kinds}
                               for loc, kinds in AVAILABLE[spot].items()])  # fmt: skip
        for collection, store, field in (
            ("/sshkeys", self.ssh_keys, "key"),
            ("/scripts", self.scripts, "script"),
        ):
            if path == collection and method == "POST":
                new_id = str(uuid.uuid4())  # Verda's ids are UUIDs
                with self.lock:
                    store[new_id] = {"id": new_id, "name": body["name"], field: body[field]}
                return Reply(201, new_id, {"Content-Type": "text/plain"})
            if path == collection and method == "GET":
                with self.lock:
                    return Reply(200, list(store.values()))
            if method == "DELETE" and (m := re.fullmatch(rf"{collection}/([\w-]+)", path)):
                with self.lock:
                    found = store.pop(m[1], None)
                return Reply(200 if found else 404, None)
        if path == "/instances" and method == "POST":
            return self._create(body or {})
        if path == "/instances" and method == "GET":
            with self.lock:
                return Reply(200, [vm.json() for vm in self.vms.values()])
        if path == "/instances" and method == "PUT":
            return self._action(body or {})
        if method == "GET" and (m := re.fullmatch(r"/instances/([\w-]+)", path)):
            with self.lock:
                vm = self.vms.get(m[1])
            if vm is None:
                return Reply(404, {"code": "not_found", "message": "Instance not found"})
            return Reply(200, vm.json())
        return Reply(404, {"code": "not_found", "message": path})

    def _token(self, body: dict[str, Any]) -> Reply:
        if (body.get("grant_type"), body.get("client_id"), body.get("client_secret")) != (
            "client_credentials", CLIENT_ID, CLIENT_SECRET,
        ):  # fmt: skip
            return Reply(401, {"code": "unauthorized_request", "message": "Invalid client"})
        token = secrets.token_hex(12)
        with self.lock:
            self.tokens.add(token)
        return Reply(
            200,
            {
                "access_token": token,
                "refresh_token": secrets.token_hex(12),
                "expires_in": 3600,
                "token_type": "Bearer",
                "scope": "cloud-api-v1",
            },
        )

    def _create(self, body: dict[str, Any]) -> Reply:
        kind = next((t for t in TYPES if t[0] == body.get("instance_type")), None)
        location = body.get("location_code", "FIN-01")
        spot = bool(body.get("is_spot"))
        if kind is None:
            return Reply(400, {"code": "invalid_request", "message": "Unknown instance type"})
        if self.take_capacity_refusal() or kind[0] not in AVAILABLE[spot].get(location, []):
            message = f"No capacity available for {kind[0]} in {location}"
            return Reply(400, {"code": "invalid_request", "message": message})
        with self.lock:
            script = self.scripts.get(str(body.get("startup_script_id")))
        if script is None:
            return Reply(400, {"code": "invalid_request", "message": "Unknown startup script"})
        vm_id = f"{secrets.token_hex(4)}-{secrets.token_hex(2)}"
        vm = VerdaVM(vm_id, body["hostname"], kind[0], location, spot,
                     kind[6] if spot else kind[5])  # fmt: skip
        with self.lock:
            self.vms[vm_id] = vm

        def ready(host: str, port: int) -> None:
            assert port == 22
            with self.lock:
                if vm.status == "provisioning":
                    vm.status, vm.ip = "running", host

        self.start_backing(vm_id, len(self.vms), script["script"], ready)
        return Reply(202, vm_id, {"Content-Type": "text/plain"})

    def _action(self, body: dict[str, Any]) -> Reply:
        ids = body.get("id")
        ids = [ids] if isinstance(ids, str) else list(ids or [])
        if body.get("action") != "delete":
            return Reply(400, {"code": "invalid_request", "message": "unsupported action"})
        for vm_id in ids:
            if vm_id not in self.vms:
                return Reply(404, {"code": "not_found", "message": f"Instance {vm_id} not found"})
        for vm_id in ids:
            self.stop_backing(vm_id)
            with self.lock:
                self.vms.pop(vm_id, None)
        return Reply(202, None)


def _type_json(t: tuple[Any, ...]) -> dict[str, Any]:
    name, gpu, count, cpus, ram, price, spot = t
    return {
        "id": name.lower(),
        "instance_type": name,
        "price_per_hour": f"{price:.2f}",
        "spot_price": None if spot is None else f"{spot:.2f}",
        "description": f"{gpu or 'CPU'} instance",
        "cpu": {"description": f"{cpus} CPU", "number_of_cores": cpus},
        "gpu": {"description": gpu, "number_of_gpus": count},
        "memory": {"description": f"{ram} GB RAM", "size_in_gigabytes": ram},
        "gpu_memory": {"description": "", "size_in_gigabytes": 80 * count},
        "storage": {"description": "dynamic"},
    }


def api_base(sim: VerdaSimulator) -> str:
    """The value of ``SKYWARD_VERDA_ENDPOINT`` for this simulator."""
    return sim.url + "/v1"
