"""A local Verda (formerly DataCrunch) REST API (``/v1``) on 127.0.0.1.

Shapes: what the official SDK (``verda`` 1.25.0) sends and reads, file by file:
``authentication/_authentication.py`` (``POST /oauth2/token``), ``instance_types/
_instance_types.py`` (``GET /instance-types?currency=``; every field it reads: ``best_for``,
``model``, ``name``, ``p2p``, ``currency``, ``manufacturer``, ``display_name``,
``supported_os``, ``spot_price``), ``instances/_instances.py`` (``GET
/instance-availability?isSpot=&location_code=``, ``POST /instances`` with ``os_volume``
and its ``on_spot_discontinue``, ``GET /instances[/{id}]``, ``PUT /instances`` actions
with ``volume_ids`` and ``delete_permanently``), ``ssh_keys/_ssh_keys.py`` and
``startup_scripts/_startup_scripts.py`` (create answers the id as text; get by id answers
a list of one), ``volumes/_volumes.py`` (``GET /volumes?status=``, ``DELETE
/volumes/{id}`` with ``is_permanent``), ``constants.py`` (instance statuses, error codes,
locations). Errors are
``{"code": ..., "message": ...}`` (``http_client/_http_client.py::handle_error``).

Strict as the real API: an unknown or misspelt query parameter or body field is HTTP 400
``invalid_request``. Prices are in the account's currency (EUR here) unless the request
asks for ``currency=usd``.

Each VM is backed by a real local node on port 22 of its own 127.0.0.x address (Verda
reports only an IP), started from its startup script when that is skyward's boot script,
else with a fresh host key that lets in the VM's first SSH key. Each VM has an OS volume;
``volumes`` holds them, so a test sees what is left billing.

Faults: ``fail_with("429")``, ``fail_with("500")``, ``refuse_capacity(n)``, ``sell_out()``,
``preempt(id, reads_as)``: a reclaimed spot VM reads as ``discontinued`` or is gone
(404); what the real API shows is not documented, so the provider must take both.
"""

from __future__ import annotations

import re
import secrets
import uuid
from dataclasses import dataclass, field
from typing import Any

from ..simbase import Invalid, Reply, Request, Simulator, check_fields, check_params

CLIENT_ID = "verda-test-client"
CLIENT_SECRET = "verda-test-secret"
EUR_PER_USD = 0.9

# instance_type, model, name, GPUs, vCPUs, RAM GB, USD price, USD spot price
TYPES = [
    ("1A100.22V", "A100", "A100 SXM4 80GB", 1, 22, 120, 1.29, 0.52),
    ("2A100.44V", "A100", "A100 SXM4 80GB", 2, 44, 240, 2.58, 1.04),
    ("4A100.88V", "A100", "A100 SXM4 80GB", 4, 88, 480, 5.16, 2.08),
    ("2H100.80S.60V", "H100", "H100 SXM5 80GB", 2, 60, 370, 5.00, 2.10),
    ("1RTX6000ADA.10V", "RTX6000 Ada", "RTX 6000 Ada 48GB", 1, 10, 60, 0.89, 0.35),
    ("CPU.4V.16G", "CPU Node", "AMD EPYC", 0, 4, 16, 0.03, 0.01),
]
AVAILABLE = {
    False: {"FIN-01": [t[0] for t in TYPES], "ICE-01": ["2A100.44V", "4A100.88V"]},
    True: {"FIN-01": ["1A100.22V", "1RTX6000ADA.10V"], "FIN-03": ["2A100.44V"]},
}
SPOT_POLICIES = {"keep_detached", "move_to_trash", "delete_permanently"}
CREATE_FIELDS = {
    "instance_type", "image", "ssh_key_ids", "startup_script_id", "hostname", "description",
    "location_code", "os_volume", "volumes", "existing_volumes", "is_spot", "coupon",
    "contract", "pricing",
}  # fmt: skip
ACTION_FIELDS = {"id", "action", "volume_ids", "delete_permanently"}
ACTIONS = {"start", "shutdown", "delete", "hibernate", "restore", "boot", "discontinue",
           "force_shutdown", "delete_stuck"}  # fmt: skip


@dataclass
class VerdaVM:
    id: str
    hostname: str
    instance_type: str
    location: str
    is_spot: bool
    price: float
    os_volume_id: str
    body: dict[str, Any] = field(default_factory=dict)
    status: str = "ordered"
    ip: str = ""

    def json(self) -> dict[str, Any]:
        kind = next(t for t in TYPES if t[0] == self.instance_type)
        return {
            "id": self.id,
            "instance_type": self.instance_type,
            "image": self.body.get("image"),
            "os_name": "Ubuntu 22.04",
            "price_per_hour": self.price,
            "hostname": self.hostname,
            "description": self.body.get("description") or "",
            "ip": self.ip or None,
            "status": self.status,
            "created_at": "2025-01-01T00:00:00.000Z",
            "ssh_key_ids": list(self.body.get("ssh_key_ids") or []),
            "startup_script_id": self.body.get("startup_script_id"),
            "os_volume_id": self.os_volume_id,
            "volume_ids": [self.os_volume_id],
            "jupyter_token": None,
            "cpu": {"description": f"{kind[4]} CPU", "number_of_cores": kind[4]},
            "gpu": _gpu(kind),
            "memory": {"description": f"{kind[5]} GB RAM", "size_in_gigabytes": kind[5]},
            "gpu_memory": {"description": f"{80 * kind[3]} GB", "size_in_gigabytes": 80 * kind[3]},
            "storage": {"description": "dynamic"},
            "location": self.location,
            "is_spot": self.is_spot,
            "contract": "SPOT" if self.is_spot else "PAY_AS_YOU_GO",
            "pricing": "FIXED_PRICE",
        }


class VerdaSimulator(Simulator):
    """Verda's REST API on 127.0.0.1; nodes listen on port 22."""

    name = "verda"

    def __init__(self) -> None:
        self.vms: dict[str, VerdaVM] = {}
        self.ssh_keys: dict[str, dict[str, str]] = {}
        self.scripts: dict[str, dict[str, str]] = {}
        self.volumes: dict[str, dict[str, Any]] = {}
        self.tokens: set[str] = set()
        self.refresh_tokens: set[str] = set()
        super().__init__(ssh_port=22)

    def preempt(self, instance_id: str, reads_as: str = "discontinued") -> None:
        """Reclaim a spot VM: it reads as ``discontinued``, or (``reads_as="gone"``) is
        no longer listed. Its OS volume follows the VM's ``on_spot_discontinue``."""
        self.stop_backing(instance_id)
        with self.lock:
            vm = self.vms[instance_id]
            vm.status, vm.ip = "discontinued", ""
            policy = (vm.body.get("os_volume") or {}).get("on_spot_discontinue")
            volume = self.volumes.get(vm.os_volume_id)
            if volume is not None:
                if policy == "delete_permanently":
                    self.volumes.pop(vm.os_volume_id)
                else:
                    volume["status"] = "deleted" if policy == "move_to_trash" else "detached"
                    volume["instance_id"] = None
            if reads_as == "gone":
                self.vms.pop(instance_id)

    def billed_volumes(self) -> list[dict[str, Any]]:
        """Volumes still billed: attached or detached (not trashed, not deleted)."""
        with self.lock:
            return [v for v in self.volumes.values() if v["status"] in ("attached", "detached")]

    # -- HTTP ---------------------------------------------------------------------------

    def handle(self, request: Request) -> Reply:
        if not request.path.startswith("/v1/"):
            return Reply(404, {"code": "not_found", "message": "not found"})
        try:
            return self._route(request)
        except Invalid as exc:
            return Reply(400, {"code": "invalid_request", "message": str(exc)})

    def _route(self, request: Request) -> Reply:
        path, method, body, query = request.path[3:], request.method, request.body, request.query
        if path == "/oauth2/token" and method == "POST":
            check_params(query, set())
            return self._token(_object(body))
        auth = request.headers.get("Authorization", "")
        if auth.removeprefix("Bearer ") not in self.tokens:
            return Reply(401, {"code": "unauthorized_request", "message": "Invalid token"})
        if path == "/instance-types" and method == "GET":
            check_params(query, {"currency"})
            currency = query.get("currency", "eur")
            if currency not in ("usd", "eur"):
                raise Invalid(f"currency must be usd or eur, not {currency!r}")
            return Reply(200, [_type_json(t, currency) for t in TYPES])
        if path.startswith("/instance-availability") and method == "GET":
            return self._availability(path, query)
        for collection, store, text in (
            ("/sshkeys", self.ssh_keys, "key"),
            ("/scripts", self.scripts, "script"),
        ):
            if path == collection or path.startswith(collection + "/"):
                return self._collection(collection, store, text, request, path)
        if path == "/volumes" and method == "GET":
            check_params(query, {"status"})
            with self.lock:
                rows = [dict(v) for v in self.volumes.values()]
            wanted = query.get("status")
            return Reply(200, [r for r in rows if wanted is None or r["status"] == wanted])
        if method == "DELETE" and (m := re.fullmatch(r"/volumes/([\w-]+)", path)):
            check_params(query, set())
            fields = _object(body)
            check_fields(fields, {"is_permanent"}, "delete volume")
            with self.lock:
                volume = self.volumes.get(m[1])
                if volume is None:
                    return Reply(404, {"code": "not_found", "message": "Volume not found"})
                if volume["status"] == "attached":
                    raise Invalid("volume: detach it from its instance first")
                if fields.get("is_permanent"):
                    self.volumes.pop(m[1])
                else:
                    volume["status"] = "deleted"  # in the trash
            return Reply(202, None)
        if path == "/instances" and method == "POST":
            check_params(query, set())
            return self._create(_object(body))
        if path == "/instances" and method == "GET":
            check_params(query, {"status"})
            with self.lock:
                rows = [vm.json() for vm in self.vms.values()]
            wanted = query.get("status")
            return Reply(200, [r for r in rows if wanted is None or r["status"] == wanted])
        if path == "/instances" and method == "PUT":
            check_params(query, set())
            return self._action(_object(body))
        if method == "GET" and (m := re.fullmatch(r"/instances/([\w-]+)", path)):
            check_params(query, set())
            with self.lock:
                vm = self.vms.get(m[1])
            if vm is None:
                return Reply(404, {"code": "not_found", "message": "Instance not found"})
            return Reply(200, vm.json())
        return Reply(404, {"code": "not_found", "message": path})

    def _token(self, body: dict[str, Any]) -> Reply:
        grant = body.get("grant_type")
        if grant == "refresh_token":
            check_fields(body, {"grant_type", "refresh_token"}, "token")
            if body.get("refresh_token") not in self.refresh_tokens:
                return Reply(401, {"code": "unauthorized_request", "message": "Invalid token"})
        else:
            check_fields(body, {"grant_type", "client_id", "client_secret"}, "token")
            if (grant, body.get("client_id"), body.get("client_secret")) != (
                "client_credentials", CLIENT_ID, CLIENT_SECRET,
            ):  # fmt: skip
                return Reply(401, {"code": "unauthorized_request", "message": "Invalid client"})
        token, refresh = secrets.token_hex(12), secrets.token_hex(12)
        with self.lock:
            self.tokens.add(token)
            self.refresh_tokens.add(refresh)
        return Reply(200, {"access_token": token, "refresh_token": refresh, "expires_in": 3600,
                           "token_type": "Bearer", "scope": "cloud-api-v1"})  # fmt: skip

    def _availability(self, path: str, query: dict[str, str]) -> Reply:
        check_params(query, {"isSpot", "location_code"})
        flag = query.get("isSpot", "false")
        if flag not in ("true", "false"):
            raise Invalid(f"isSpot must be true or false, not {flag!r}")
        places = AVAILABLE[flag == "true"]
        if self.sold_out:
            places = {location: [] for location in places}
        where = query.get("location_code")
        if where:
            places = {where: places.get(where, [])}
        if m := re.fullmatch(r"/instance-availability/([\w.-]+)", path):
            return Reply(200, any(m[1] in kinds for kinds in places.values()))
        return Reply(200, [{"location_code": loc, "availabilities": kinds}
                           for loc, kinds in places.items()])  # fmt: skip

    def _collection(
        self, collection: str, store: dict[str, dict[str, str]], text: str,
        request: Request, path: str,
    ) -> Reply:  # fmt: skip
        method, body = request.method, request.body
        check_params(request.query, set())
        one = re.fullmatch(rf"{collection}/([\w-]+)", path)
        if path == collection and method == "POST":
            fields = _object(body)
            check_fields(fields, {"name", text}, collection[1:])
            if not fields.get("name") or not fields.get(text):
                raise Invalid(f"{collection[1:]}: name and {text} are required")
            new_id = str(uuid.uuid4())  # Verda's ids are UUIDs
            with self.lock:
                store[new_id] = {"id": new_id, "name": fields["name"], text: fields[text]}
            return Reply(201, new_id, {"Content-Type": "text/plain"})
        if path == collection and method == "GET":
            with self.lock:
                return Reply(200, list(store.values()))
        if path == collection and method == "DELETE":
            ids = _object(body).get("keys" if text == "key" else "scripts") or []
            with self.lock:
                for item in ids:
                    store.pop(item, None)
            return Reply(200, None)
        if one and method == "GET":
            with self.lock:
                found = store.get(one[1])
            if found is None:
                return Reply(404, {"code": "not_found", "message": f"{one[1]} not found"})
            return Reply(200, [found])
        if one and method == "DELETE":
            check_fields(_object(body), set(), collection[1:])
            with self.lock:
                found = store.pop(one[1], None)
            return Reply(200 if found else 404, None)
        return Reply(404, {"code": "not_found", "message": path})

    def _create(self, body: dict[str, Any]) -> Reply:
        check_fields(body, CREATE_FIELDS, "instance")
        for name in ("instance_type", "image", "hostname", "description"):
            if not isinstance(body.get(name), str):
                raise Invalid(f"instance: {name} is required")
        volume = body.get("os_volume") or {}
        if not isinstance(volume, dict):
            raise Invalid("instance: os_volume must be an object")
        check_fields(volume, {"name", "size", "on_spot_discontinue"}, "os_volume")
        policy = volume.get("on_spot_discontinue")
        if policy is not None and policy not in SPOT_POLICIES:
            raise Invalid(f"os_volume.on_spot_discontinue must be one of {sorted(SPOT_POLICIES)}")
        kind = next((t for t in TYPES if t[0] == body["instance_type"]), None)
        location = body.get("location_code") or "FIN-03"
        spot = bool(body.get("is_spot"))
        if kind is None:
            return Reply(400, {"code": "invalid_request", "message": "Unknown instance type"})
        if self.take_capacity_refusal() or kind[0] not in AVAILABLE[spot].get(location, []):
            message = (
                f"Not enough resources to deploy a {kind[3]} GPU instance type {kind[0]} "
                f"in {location}"
            )
            return Reply(503, {"code": "service_unavailable", "message": message})
        with self.lock:
            keys = [self.ssh_keys[k] for k in body.get("ssh_key_ids") or [] if k in self.ssh_keys]
            script = self.scripts.get(str(body.get("startup_script_id")))
        if body.get("startup_script_id") and script is None:
            raise Invalid("instance: unknown startup script")
        vm_id = str(uuid.uuid4())
        volume_id = str(uuid.uuid4())
        vm = VerdaVM(vm_id, body["hostname"], kind[0], location, spot,
                     kind[7] if spot else kind[6], volume_id, body)  # fmt: skip
        with self.lock:
            self.vms[vm_id] = vm
            self.volumes[volume_id] = {
                "id": volume_id, "name": volume.get("name") or f"{vm.hostname}-os",
                "size": volume.get("size") or 50, "status": "attached", "instance_id": vm_id,
                "is_os_volume": True,
            }  # fmt: skip
            vm.status = "provisioning"

        def ready(host: str, port: int) -> None:
            assert port == 22
            with self.lock:
                if vm.status == "provisioning":
                    vm.status, vm.ip = "running", host

        if script is not None and "SKYWARD" in script["script"]:
            self.start_backing(vm_id, len(self.vms), script["script"], ready)
        else:
            authorized = keys[0]["key"] if keys else ""
            self.start_backing_keys(vm_id, len(self.vms), self.new_host_key(), authorized, ready)
        return Reply(202, vm_id, {"Content-Type": "text/plain"})

    def _action(self, body: dict[str, Any]) -> Reply:
        check_fields(body, ACTION_FIELDS, "instance action")
        ids = body.get("id")
        ids = [ids] if isinstance(ids, str) else list(ids or [])
        action = body.get("action")
        if action not in ACTIONS:
            raise Invalid(f"action must be one of {sorted(ACTIONS)}")
        if action not in ("delete", "shutdown"):
            raise Invalid(f"the simulator does not do {action}")
        with self.lock:
            missing = [i for i in ids if i not in self.vms]
        if missing:
            return Reply(404, {"code": "not_found", "message": f"Instance {missing[0]} not found"})
        for vm_id in ids:
            self.stop_backing(vm_id)
            with self.lock:
                vm = self.vms[vm_id]
                if action == "shutdown":
                    vm.status, vm.ip = "offline", ""
                    continue
                self.vms.pop(vm_id)
                volume = self.volumes.get(vm.os_volume_id)
                if volume is not None:
                    if vm.os_volume_id in (body.get("volume_ids") or []):
                        if body.get("delete_permanently"):
                            self.volumes.pop(vm.os_volume_id)
                        else:
                            volume["status"] = "deleted"  # in the trash
                    else:
                        volume["status"], volume["instance_id"] = "detached", None
        return Reply(202, None)


def _gpu(kind: tuple[Any, ...]) -> dict[str, Any]:
    count, name = kind[3], kind[2]
    return {"description": f"{count}x {name}" if count else "", "number_of_gpus": count}


def _type_json(t: tuple[Any, ...], currency: str) -> dict[str, Any]:
    name, model, gpu_name, count, cpus, ram, usd, usd_spot = t
    rate = 1.0 if currency == "usd" else EUR_PER_USD
    return {
        "id": str(uuid.uuid5(uuid.NAMESPACE_DNS, name)),
        "instance_type": name,
        "price_per_hour": f"{usd * rate:.2f}",
        "spot_price": f"{usd_spot * rate:.2f}",
        "dynamic_price": f"{usd * rate * 0.8:.2f}",
        "max_dynamic_price": f"{usd * rate:.2f}",
        "serverless_price": None,
        "serverless_spot_price": None,
        "currency": currency,
        "description": f"{'Dedicated GPU' if count else 'CPU'} instance",
        "cpu": {"description": f"{cpus} CPU", "number_of_cores": cpus},
        "gpu": _gpu(t),
        "memory": {"description": f"{ram} GB RAM", "size_in_gigabytes": ram},
        "gpu_memory": {"description": f"{80 * count} GB VRAM", "size_in_gigabytes": 80 * count},
        "storage": {"description": "dynamic"},
        "best_for": ["Large model training"] if count else ["CPU workloads"],
        "model": model,
        "name": gpu_name,
        "display_name": f"NVIDIA {gpu_name}" if count else gpu_name,
        "manufacturer": "NVIDIA" if count else "AMD",
        "p2p": "600 GB/s" if count > 1 else "",
        "supported_os": ["ubuntu-22.04-cuda-12.4-docker", "ubuntu-24.04"],
        "deploy_warning": None,
    }


def _object(body: Any) -> dict[str, Any]:
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise Invalid("the body must be a JSON object")
    return body


def api_base(sim: VerdaSimulator) -> str:
    """The value of ``SKYWARD_VERDA_ENDPOINT`` for this simulator."""
    return sim.url + "/v1"
