"""A local Vast.ai REST API on 127.0.0.1, in the shapes of Vast's OpenAPI pages.

Shapes: vast-ai/docs ``api-reference/openapi/yaml/`` (search_offers, create_instance,
show_instance, show_instances (``/api/v1/instances/``), destroy_instance,
create_ssh_key, show_ssh_keys, delete_ssh_key); what the official SDK (``vastai`` 1.9.1,
``vastai/api/{offers,instances,keys}.py``) sends and reads decides the rest: the search
fields (``vastai/api/query.py``: ``offers_fields``), ``start_date`` and ``extra_env`` as
a list of pairs in each instance row, ``owner=me`` on ``GET /instances/{id}/``.

Strict as the real API: an unknown or misspelt search field, body field or query
parameter is HTTP 400 ``{"success": false, "error": "invalid_args", "msg": ...}``. Query
values arrive as strings (the SDK sends JSON in each), and are read as the API reads them
(``limit=25`` is a number). Offers are priced as Vast prices them: ``dph_total`` is the
machine (``dph_base``, or ``min_bid`` in a ``bid`` search) plus the storage asked for
(``allocated_storage`` GB, 8 when not given) at the host's ``storage_cost`` ($/GB/month).
The search applies the filters it is sent, so unverified and external hosts are offered
unless the request leaves them out, as the SDK's default filters do.

Each instance is backed by a real local node, started from its skyward ``onstart`` script,
or (for the SDK) with a fresh host key that lets in the account's SSH key.

Faults: ``fail_with("429")``, ``fail_with("500")``, ``refuse_capacity(n)``, ``sell_out()``,
``preempt(id)``.
"""

from __future__ import annotations

import base64
import json
import re
import time
from typing import Any

from ..simbase import Invalid, Reply, Request, Simulator, check_fields, check_params
from .instance import HOURS_PER_MONTH, VastInstance

API_KEY = "vast-test-key"
DEFAULT_STORAGE_GB = 8.0

# gpu_name, per-GPU on-demand price, per-GPU minimum bid, where, verification, external
MACHINES = [
    ("A100 SXM4", 1.10, 0.55, "Texas, US", "verified", False),
    ("A100 PCIE", 0.95, 0.50, "Quebec, CA", "verified", False),
    ("A100 PCIE", 0.60, 0.30, "Nowhere, XX", "unverified", False),
    ("A100 SXM4", 0.70, 0.35, "Elsewhere, XX", "verified", True),
    ("RTX 4090", 0.35, 0.18, "Norway, NO", "verified", False),
    ("H100 SXM", 2.40, 1.30, "Iceland, IS", "verified", False),
]
STORAGE_COST = 0.15  # $/GB/month

SEARCH_FIELDS = {
    "bw_nvlink", "compute_cap", "cpu_arch", "cpu_cores", "cpu_cores_effective", "cpu_ghz",
    "cpu_ram", "cuda_max_good", "datacenter", "direct_port_count", "driver_version",
    "disk_bw", "disk_space", "dlperf", "dlperf_per_dphtotal", "dph_total", "duration",
    "external", "flops_per_dphtotal", "gpu_arch", "gpu_display_active", "gpu_frac",
    "gpu_mem_bw", "gpu_name", "gpu_ram", "gpu_total_ram", "gpu_max_power", "gpu_max_temp",
    "has_avx", "host_id", "id", "inet_down", "inet_down_cost", "inet_up", "inet_up_cost",
    "machine_id", "min_bid", "mobo_name", "num_gpus", "os_version", "pci_gen", "pcie_bw",
    "reliability", "rentable", "rented", "storage_cost", "static_ip", "total_flops",
    "ubuntu_version", "verification", "verified", "vms_enabled", "geolocation", "cluster_id",
}  # fmt: skip
SEARCH_CONTROLS = {"order", "type", "limit", "allocated_storage", "disable_bundling"}
SEARCH_TYPES = {"on-demand", "ondemand", "bid", "reserved"}
OPERATORS = {"eq", "neq", "gt", "gte", "lt", "lte", "in", "notin"}
RENT_FIELDS = {
    "client_id", "image", "env", "price", "disk", "label", "extra", "onstart", "image_login",
    "python_utf8", "lang_utf8", "use_jupyter_lab", "jupyter_dir", "force", "cancel_unavail",
    "template_hash_id", "template_id", "user", "runtype", "args", "args_str", "volume_info",
    "target_state", "vm",
}  # fmt: skip
RUNTYPES = {
    "ssh", "ssh_direc", "ssh_direct", "ssh_proxy", "jupyter", "jupyter_direc",
    "jupyter_direct", "jupyter_proxy", "args",
}  # fmt: skip
V1_PARAMS = {"limit", "after_token", "order_by", "select_cols", "select_filters"}
V1_FILTERABLE = {"actual_status", "gpu_name", "verification", "id", "label", "machine_id"}


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
        for gpu, price, bid, where, verification, external in MACHINES:
            for count in (1, 2, 4, 8):
                ask += 1
                rows.append({
                    "id": ask, "ask_contract_id": ask, "bundle_id": ask * 7,
                    "bundled_results": None, "machine_id": ask * 10, "host_id": 700 + ask % 13,
                    "gpu_name": gpu, "num_gpus": count, "gpu_ram": 81920,
                    "gpu_total_ram": 81920 * count,
                    "gpu_arch": "nvidia", "gpu_frac": 1.0, "gpu_display_active": False,
                    "gpu_mem_bw": 1500.0, "gpu_max_power": 400, "gpu_max_temp": 85,
                    "gpu_lanes": 16, "bw_nvlink": 0.0, "compute_cap": 800, "cuda_max_good": 12.4,
                    "driver_version": "550.54.14", "cpu_arch": "amd64", "cpu_name": "EPYC 7543",
                    "cpu_cores": 16 * count, "cpu_cores_effective": 8 * count, "cpu_ghz": 2.8,
                    "cpu_ram": 64000 * count, "has_avx": 1, "mobo_name": "H12SSL",
                    "pci_gen": 4.0, "pcie_bw": 24.0, "disk_space": 500.0, "disk_bw": 3000.0,
                    "disk_name": "NVMe", "inet_up": 900.0, "inet_down": 900.0,
                    "inet_up_cost": 0.001, "inet_down_cost": 0.001, "direct_port_count": 20,
                    "dlperf": 30.0 * count, "total_flops": 20.0 * count, "score": 100.0,
                    "reliability": 0.99, "duration": 30 * 86400.0, "geolocation": where,
                    "verification": verification,
                    "vericode": 1 if verification == "verified" else 0,
                    "external": external, "static_ip": True, "public_ipaddr": "203.0.113.7",
                    "rentable": True, "rented": False, "vms_enabled": False, "os_version": "22.04",
                    "dph_base": round(price * count, 4), "min_bid": round(bid * count, 4),
                    "storage_cost": STORAGE_COST, "credit_discount_max": 0.0, "hosting_type": 0,
                    "logo": "/static/logos/vastai_small2.png", "is_bid": False,
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

    # -- HTTP ---------------------------------------------------------------------------

    def handle(self, request: Request) -> Reply:
        if not request.path.startswith(("/api/v0/", "/api/v1/")):
            return Reply(404, {"error": "not found"})
        if request.headers.get("Authorization") != f"Bearer {API_KEY}":
            return Reply(401, {"success": False, "error": "auth_error", "msg": "Invalid user key"})
        try:
            return self._route(request)
        except Invalid as exc:
            return Reply(400, {"success": False, "error": "invalid_args", "msg": str(exc)})

    def _route(self, request: Request) -> Reply:
        version, path = request.path[5:7], request.path[7:]
        method, body, query = request.method, request.body, request.query
        if version == "v1":
            if method == "GET" and path == "/instances/":
                return self._list_v1(query)
            return Reply(404, {"success": False, "error": "not_found", "msg": path})
        if method == "POST" and path == "/bundles/":
            _nocheck_params(query)
            return self._search(_object(body))
        if method == "PUT" and (m := re.fullmatch(r"/asks/(\d+)/", path)):
            _nocheck_params(query)
            return self._rent(int(m[1]), _object(body))
        if method == "GET" and path == "/instances/":
            check_params(query, {"owner"})
            with self.lock:
                rows = [i.json() for i in self.instances.values()]
            return Reply(200, {"instances_found": len(rows), "instances": rows})
        if m := re.fullmatch(r"/instances/(\d+)/", path):
            return self._one(method, int(m[1]), query, body)
        if path == "/ssh/" and method == "POST":
            _nocheck_params(query)
            fields = _object(body)
            check_fields(fields, {"ssh_key"}, "create ssh-key")
            if not str(fields.get("ssh_key") or "").strip():
                return Reply(400, {"success": False, "error": "no_ssh_key", "msg": "No ssh key"})
            with self.lock:
                key_id = self.new_id()
                self.ssh_keys[key_id] = fields["ssh_key"].strip()
            return Reply(200, {"success": True, "key": self._key_json(key_id)})
        if path == "/ssh/" and method == "GET":
            _nocheck_params(query)
            with self.lock:
                return Reply(200, [self._key_json(k) for k in self.ssh_keys])
        if method == "DELETE" and (m := re.fullmatch(r"/ssh/(\d+)/", path)):
            check_fields(_object(body), set(), "delete ssh-key")
            with self.lock:
                found = self.ssh_keys.pop(int(m[1]), None)
            return Reply(200 if found else 404, {"success": found is not None})
        return Reply(404, {"success": False, "error": "not_found", "msg": path})

    def _key_json(self, key_id: int) -> dict[str, Any]:
        key = self.ssh_keys[key_id]
        return {"id": key_id, "user_id": 1, "key": key, "public_key": key,
                "created_at": "2025-01-01T00:00:00Z", "deleted_at": None}  # fmt: skip

    def _one(self, method: str, iid: int, query: dict[str, str], body: Any) -> Reply:
        with self.lock:
            inst = self.instances.get(iid)
        if method == "GET":
            check_params(query, {"owner"})
            if query.get("owner") != "me":
                raise Invalid("show instance: owner=me is required to read your own instance")
            return Reply(200, {"instances": inst.json() if inst else None})
        if method == "DELETE":
            _nocheck_params(query)
            check_fields(_object(body), set(), "destroy instance")
            if inst is None:
                return Reply(404, {"success": False, "error": "no_such_instance",
                                   "msg": f"Instance {iid} not found"})  # fmt: skip
            self.stop_backing(str(iid))
            with self.lock:
                self.instances.pop(iid, None)
            return Reply(200, {"success": True, "msg": "Instance destroyed successfully"})
        return Reply(404, {"success": False, "error": "not_found", "msg": f"/instances/{iid}/"})

    # -- offers -------------------------------------------------------------------------

    def _search(self, query: dict[str, Any]) -> Reply:
        unknown = set(query) - SEARCH_FIELDS - SEARCH_CONTROLS
        if unknown:
            raise Invalid(f"search offers: unknown field(s) {', '.join(sorted(unknown))}")
        kind = query.get("type", "on-demand")
        if kind not in SEARCH_TYPES:
            raise Invalid(f"search offers: type must be one of {sorted(SEARCH_TYPES)}")
        storage = float(query.get("allocated_storage") or DEFAULT_STORAGE_GB)
        filters = {k: v for k, v in query.items() if k in SEARCH_FIELDS}
        for name, ops in filters.items():
            if not isinstance(ops, dict) or not ops or set(ops) - OPERATORS:
                raise Invalid(f"search offers: {name} takes {{op: value}} with op in {OPERATORS}")
        rows = []
        for offer in [] if self.sold_out else self.offers:
            row = dict(offer)
            machine = row["min_bid"] if kind == "bid" else row["dph_base"]
            row["storage_total_cost"] = round(row["storage_cost"] * storage / HOURS_PER_MONTH, 6)
            row["dph_total"] = round(machine + row["storage_total_cost"], 6)
            row["is_bid"] = kind == "bid"
            if all(_matches(_column(row, name, storage), ops) for name, ops in filters.items()):
                rows.append(row)
        for name, direction in reversed(query.get("order") or [["score", "desc"]]):
            if name not in SEARCH_FIELDS | {"score"}:
                raise Invalid(f"search offers: cannot order by {name}")
            rows.sort(key=lambda r, n=name: r.get(n) or 0, reverse=direction == "desc")
        limit = query.get("limit")
        return Reply(200, {"offers": rows[: int(limit)] if limit else rows})

    def _rent(self, ask: int, body: dict[str, Any]) -> Reply:
        check_fields(body, RENT_FIELDS, "create instance")
        if not body.get("image") and not body.get("template_hash_id"):
            raise Invalid("create instance: image is required")
        runtype = body.get("runtype")
        if runtype is not None and (
            not str(runtype).split() or set(str(runtype).split()) - RUNTYPES
        ):
            raise Invalid(f"create instance: runtype {runtype!r} is not one of {sorted(RUNTYPES)}")
        if not isinstance(body.get("env") or {}, dict | str):
            raise Invalid("create instance: env must be a string or an object")
        offer = next((o for o in self.offers if o["id"] == ask), None)
        if offer is None or self.take_capacity_refusal():
            return Reply(
                404,
                {"success": False, "error": "invalid_args", "ask_id": ask,
                 "msg": f"error 404/3603: no_such_ask Instance type by id {ask} is not available."},
            )  # fmt: skip
        price = body.get("price")
        if price is not None and not 0.001 <= float(price) <= 128:
            raise Invalid("create instance: price must be between 0.001 and 128")
        if price is not None and float(price) < offer["min_bid"]:
            low = f"bid {price} is below the minimum {offer['min_bid']}"
            return Reply(400, {"success": False, "error": "invalid_price", "msg": low})
        with self.lock:
            inst = VastInstance(self.new_id(), body.get("label") or "", offer,
                                price is not None, body, time.time())  # fmt: skip
            self.instances[inst.id] = inst
            account_keys = list(self.ssh_keys.values())

        def ready(host: str, port: int) -> None:
            with self.lock:
                if inst.actual in (None, "loading"):
                    inst.actual, inst.ip, inst.port = "running", host, port
                    inst.status_msg = "success, running"

        inst.actual = "loading"
        onstart = str(body.get("onstart") or "")
        if "SKYWARD" in onstart:
            self.start_backing(str(inst.id), inst.id, onstart, ready)
        else:
            authorized = account_keys[-1] if account_keys else ""
            self.start_backing_keys(str(inst.id), inst.id, self.new_host_key(), authorized, ready)
        return Reply(200, {"success": True, "new_contract": inst.id})

    # -- /api/v1/instances/ -------------------------------------------------------------

    def _list_v1(self, query: dict[str, str]) -> Reply:
        check_params(query, V1_PARAMS)
        limit = _number(query.get("limit", "25"), "limit")
        limit = 5 if limit <= 0 else min(int(limit), 25)
        filters = _json(query.get("select_filters", "{}"), "select_filters", dict)
        bad = set(filters) - V1_FILTERABLE
        if bad:
            raise Invalid(f"show instances: cannot filter on {', '.join(sorted(bad))}")
        order = _json(query.get("order_by", '[{"col": "id", "dir": "asc"}]'), "order_by", list)
        after = 0
        if query.get("after_token"):
            try:
                after = int(json.loads(base64.b64decode(query["after_token"]))["id"])
            except (ValueError, KeyError, TypeError) as exc:
                raise Invalid("show instances: invalid after_token") from exc
        with self.lock:
            rows = [i.json() for i in sorted(self.instances.values(), key=lambda i: i.id)]
        rows = [r for r in rows if r["id"] > after]
        rows = [r for r in rows if all(_matches(r.get(k), ops) for k, ops in filters.items())]
        for directive in reversed(order):
            column = directive.get("col") if isinstance(directive, dict) else None
            if not isinstance(column, str) or (rows and column not in rows[0]):
                raise Invalid(f"show instances: invalid order_by column {column}")
            rows.sort(key=lambda r, c=column: r.get(c) or 0, reverse=directive.get("dir") == "desc")
        page, rest = rows[:limit], rows[limit:]
        token = base64.b64encode(json.dumps({"id": page[-1]["id"]}).encode()).decode()
        return Reply(200, {
            "success": True, "instances_found": len(page), "total_instances": len(rows),
            "label_counts": {}, "next_token": token if rest else None, "instances": page,
        })  # fmt: skip


def _column(row: dict[str, Any], name: str, storage: float) -> Any:
    """The value a search filter compares (the API's aliases: verified, allocated disk)."""
    if name == "verified":
        return row["verification"] == "verified"
    if name == "external":
        return bool(row["external"])
    return row.get(name)


def _coerce(value: Any, like: Any) -> Any:
    """A filter value as the API reads it: numeric strings compare as numbers."""
    if isinstance(like, int | float) and not isinstance(like, bool) and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _matches(actual: Any, ops: dict[str, Any]) -> bool:
    for op, wanted in ops.items():
        if op in ("in", "notin"):
            values = [_coerce(v, actual) for v in (wanted or [])]
            if (actual in values) != (op == "in"):
                return False
            continue
        wanted = _coerce(wanted, actual)
        if op == "eq" and actual != wanted or op == "neq" and actual == wanted:
            return False
        if op in ("gt", "gte", "lt", "lte"):
            if actual is None or wanted is None:
                return False
            if not {"gt": actual > wanted, "gte": actual >= wanted,
                    "lt": actual < wanted, "lte": actual <= wanted}[op]:  # fmt: skip
                return False
    return True


def _object(body: Any) -> dict[str, Any]:
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise Invalid(f"invalid json: {str(body)[:60]}")
    return body


def _nocheck_params(query: dict[str, str]) -> None:
    check_params(query, set())


def _number(text: str, name: str) -> float:
    try:
        return float(json.loads(text))
    except (ValueError, TypeError) as exc:
        raise Invalid(f"{name} must be a number") from exc


def _json(text: str, name: str, kind: type) -> Any:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise Invalid(f"{name}: invalid json") from exc
    if not isinstance(value, kind):
        raise Invalid(f"{name} must be a JSON {kind.__name__}")
    return value


def api_base(sim: VastSimulator) -> str:
    """The value of ``SKYWARD_VASTAI_ENDPOINT`` for this simulator."""
    return sim.url + "/api/v0"
