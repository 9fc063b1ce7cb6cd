"""A local Compute Engine for tests: the documented REST endpoints with their JSON shapes.

It answers what google-cloud-compute's REST transport sends for the calls the provider
makes (zones, machine and accelerator types, firewalls, instances, guest attributes,
zone and global operations with ``wait``). Each VM is backed by a real local SSH node
started with the host key from its ``startup-script`` and the key from ``ssh-keys``; its
address is the VM's external and internal IP. Tests can make it answer a stockout,
429 with ``Retry-After``, a 500, reject credentials, and preempt a VM.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import asyncssh

from ..aws.backing import BackingNodes, host_key_from
from .offered import (
    ACCELERATOR_TYPES,
    DEFAULT_NETWORK_FIREWALLS,
    MACHINE_TYPES,
    ZONES,
    machine_type_shape,
    zone_shape,
)

__all__ = ["MACHINE_TYPES", "GcpSimulator"]

_FIREWALL_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
_PROTOCOLS = {"tcp", "udp", "icmp", "esp", "ah", "ipip", "sctp", "all"}
_PATH = re.compile(r"^/compute/v1/projects/(?P<project>[^/]+)/(?P<rest>.*)$")


@dataclass
class _Fault:
    method: str
    pattern: str
    status: int
    reason: str
    times: int
    retry_after: float | None = None


class _Error(Exception):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status, self.reason, self.message = status, reason, message


class GcpSimulator:
    """Compute Engine on 127.0.0.1 with real nodes behind VMs and injectable failures."""

    def __init__(self) -> None:
        self.backing = BackingNodes()
        self.instances: dict[tuple[str, str], dict[str, Any]] = {}
        self.firewalls: dict[str, dict[str, Any]] = {}
        self.operations: dict[str, dict[str, Any]] = {}
        self.attributes: dict[tuple[str, str], dict[str, str]] = {}
        self.calls: list[tuple[str, str, int]] = []  # (method, path, status)
        self.capacity: set[str] = set()  # machine types (or "type@zone") that are stocked out
        self.reject_credentials = False
        self._faults: list[_Fault] = []
        self._ids = itertools.count(1000)
        self._lock = threading.RLock()
        simulator = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                simulator._serve(self)

            do_GET = do_POST = do_DELETE = do_PATCH = _handle  # noqa: N815

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self.default_network()

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # -- what tests tell it -------------------------------------------------------------

    def fail(
        self,
        method: str,
        pattern: str,
        status: int,
        reason: str,
        times: int = 1,
        retry_after: float | None = None,
    ) -> None:
        """Answer the next ``times`` requests matching (method, path regex) with an error."""
        with self._lock:
            self._faults.append(_Fault(method, pattern, status, reason, times, retry_after))

    def preempt(self, instance_id: str, project: str = "sim-project") -> None:
        """Preempt a spot VM as Compute does with action DELETE: node gone, VM deleted,
        and a ``compute.instances.preempted`` operation recorded in the zone."""
        zone, _, name = instance_id.partition("/")
        with self._lock:
            vm = self.instances.pop((zone, name))
            self.attributes.pop((zone, name), None)
        self.backing.stop(instance_id)
        self._operation(
            project, zone, "compute.instances.preempted", vm["selfLink"], done=True,
            status_message="Instance was preempted.",
        )  # fmt: skip

    # -- what tests check ---------------------------------------------------------------

    def default_network(self, project: str = "sim-project", open_ssh: bool = True) -> None:
        """The ``default`` network's own firewall rules, as a new project has them
        (without ``default-allow-ssh`` when ``open_ssh`` is false)."""
        base = f"{self.endpoint}/compute/v1/projects/{project}"
        with self._lock:
            for name in DEFAULT_NETWORK_FIREWALLS:
                self.firewalls.pop(name, None)
            for name, rule in DEFAULT_NETWORK_FIREWALLS.items():
                if open_ssh or name != "default-allow-ssh":
                    body = {"name": name, "priority": 65534, **rule}
                    self.firewalls[name] = self._firewall(base, body)

    def live_instances(self) -> list[str]:
        with self._lock:
            return [f"{zone}/{name}" for zone, name in self.instances]

    def cluster_resources(self) -> list[str]:
        """Firewall rules other than the default network's own."""
        with self._lock:
            return [name for name in self.firewalls if name not in DEFAULT_NETWORK_FIREWALLS]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
        self.backing.close()

    # -- HTTP ---------------------------------------------------------------------------

    def _serve(self, request: BaseHTTPRequestHandler) -> None:
        url = urlparse(request.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        length = int(request.headers.get("Content-Length") or 0)
        body = json.loads(request.rfile.read(length) or b"{}") if length else {}
        headers: dict[str, str] = {}
        try:
            fault = self._take_fault(request.command, url.path)
            if self.reject_credentials:
                raise _Error(401, "authError", "Request had invalid authentication credentials.")
            if fault is not None:
                if fault.retry_after is not None:
                    headers["Retry-After"] = f"{fault.retry_after:g}"
                raise _Error(fault.status, fault.reason, f"simulated {fault.reason}")
            match = _PATH.match(url.path)
            if match is None:
                raise _Error(404, "notFound", f"no route {url.path}")
            status, answer = (
                200,
                self._route(request.command, match["project"], match["rest"], query, body),
            )
        except _Error as exc:
            status = exc.status
            answer = {
                "error": {
                    "code": exc.status,
                    "message": exc.message,
                    "errors": [{"message": exc.message, "domain": "global", "reason": exc.reason}],
                }
            }
        self.calls.append((request.command, url.path, status))
        payload = json.dumps(answer).encode()
        request.send_response(status)
        request.send_header("Content-Type", "application/json; charset=UTF-8")
        request.send_header("Content-Length", str(len(payload)))
        for key, value in headers.items():
            request.send_header(key, value)
        request.end_headers()
        request.wfile.write(payload)

    def _take_fault(self, method: str, path: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.times > 0 and fault.method == method and re.search(fault.pattern, path):
                    fault.times -= 1
                    return fault
        return None

    def _route(
        self, method: str, project: str, rest: str, query: dict[str, str], body: dict[str, Any]
    ) -> Any:
        base = f"{self.endpoint}/compute/v1/projects/{project}"
        parts = rest.split("/")
        if rest == "zones" and method == "GET":
            return {"kind": "compute#zoneList", "items": [zone_shape(base, z) for z in ZONES]}
        if parts[0] == "global":
            return self._global(method, project, base, parts[1:], body)
        if parts[0] == "zones" and len(parts) >= 3:
            zone = parts[1]
            if zone not in ZONES:
                raise _Error(404, "notFound", f"The resource 'zones/{zone}' was not found")
            return self._zonal(method, project, base, zone, parts[2:], query, body)
        raise _Error(404, "notFound", f"no route {rest}")

    def _global(
        self, method: str, project: str, base: str, parts: list[str], body: dict[str, Any]
    ) -> Any:
        kind = parts[0]
        if kind == "firewalls" and method == "POST" and len(parts) == 1:
            name = body.get("name", "")
            rule = self._firewall(base, body)
            with self._lock:
                if name in self.firewalls:
                    raise _Error(409, "alreadyExists", f"The resource '{name}' already exists")
                self.firewalls[name] = rule
            return self._operation(project, None, "insert", rule["selfLink"])
        if kind == "firewalls" and method == "GET" and len(parts) == 1:
            with self._lock:
                items = [dict(rule) for rule in self.firewalls.values()]
            return {
                "kind": "compute#firewallList",
                "id": f"projects/{project}/global/firewalls",
                "items": items,
                "selfLink": f"{base}/global/firewalls",
            }
        if kind == "firewalls" and len(parts) == 2:
            with self._lock:
                rule = self.firewalls.get(parts[1])
                if rule is None:
                    raise _Error(404, "notFound", f"The resource 'firewalls/{parts[1]}' not found")
                if method == "GET":
                    return rule
                if method == "DELETE":
                    del self.firewalls[parts[1]]
                    return self._operation(project, None, "delete", rule["selfLink"])
        if kind == "operations" and len(parts) >= 2:
            return self._wait(parts[1], wait=len(parts) == 3 and parts[2] == "wait")
        raise _Error(404, "notFound", f"no route global/{'/'.join(parts)}")

    def _firewall(self, base: str, body: dict[str, Any]) -> dict[str, Any]:
        """A firewall resource as Compute stores it, or 400 for what it refuses."""
        name = body.get("name", "")
        if not _FIREWALL_NAME.match(name):
            raise _Error(400, "invalid", f"Invalid value for field 'resource.name': '{name}'.")
        allowed = body.get("allowed", [])
        if not allowed and not body.get("denied"):
            raise _Error(400, "invalid", "Required field 'resource.allowed' not specified.")
        for entry in allowed:
            protocol = str(entry.get("IPProtocol", "")).lower()
            if protocol not in _PROTOCOLS and not protocol.isdigit():
                raise _Error(400, "invalid", f"Invalid value for field 'IPProtocol': '{protocol}'.")
        rule = {
            "kind": "compute#firewall",
            "id": str(next(self._ids)),
            "creationTimestamp": "2024-01-01T00:00:00.000-08:00",
            "priority": 1000,
            "direction": "INGRESS",
            "disabled": False,
            "logConfig": {"enable": False},
            **body,
            "network": f"{base}/global/networks/" + body.get("network", "default").rsplit("/")[-1],
            "selfLink": f"{base}/global/firewalls/{name}",
        }
        sources = ("sourceRanges", "sourceTags", "sourceServiceAccounts")
        if rule["direction"] == "INGRESS" and not any(rule.get(k) for k in sources):
            rule["sourceRanges"] = ["0.0.0.0/0"]  # Compute's default: every address
        return rule

    def _zonal(
        self,
        method: str,
        project: str,
        base: str,
        zone: str,
        parts: list[str],
        query: dict[str, str],
        body: dict[str, Any],
    ) -> Any:
        kind = parts[0]
        zone_url = f"{base}/zones/{zone}"
        if kind == "machineTypes" and method == "GET":
            return {"items": [machine_type_shape(zone_url, n) for n in MACHINE_TYPES]}
        if kind == "acceleratorTypes" and method == "GET":
            return {"items": [{"name": a, "zone": zone_url} for a in ACCELERATOR_TYPES]}
        if kind == "operations":
            if len(parts) == 1:
                with self._lock:
                    items = [o for o in self.operations.values() if o.get("zone") == zone_url]
                wanted = re.search(r'operationType="?([\w.]+)', query.get("filter", ""))
                if wanted:
                    items = [o for o in items if o["operationType"] == wanted.group(1)]
                return {"items": items}
            return self._wait(parts[1], wait=len(parts) == 3 and parts[2] == "wait")
        if kind != "instances":
            raise _Error(404, "notFound", f"no route zones/{zone}/{'/'.join(parts)}")
        if len(parts) == 1 and method == "POST":
            return self._insert(project, zone_url, zone, body)
        if len(parts) == 1 and method == "GET":
            with self._lock:
                items = [vm for (z, _), vm in self.instances.items() if z == zone]
            label = re.search(r"labels\.([\w-]+)\s*=\s*\"?([\w-]+)", query.get("filter", ""))
            if label:
                items = [vm for vm in items if vm["labels"].get(label[1]) == label[2]]
            return {"items": items}
        name = parts[1]
        with self._lock:
            vm = self.instances.get((zone, name))
        if vm is None:
            path = f"projects/{project}/zones/{zone}/instances/{name}"
            raise _Error(404, "notFound", f"The resource '{path}' was not found")
        if len(parts) == 2 and method == "GET":
            return vm
        if len(parts) == 2 and method == "DELETE":
            with self._lock:
                self.instances.pop((zone, name), None)
                self.attributes.pop((zone, name), None)
            self.backing.stop(f"{zone}/{name}")
            return self._operation(project, zone, "delete", vm["selfLink"])
        if parts[2:] == ["getGuestAttributes"]:
            key = query.get("variableKey", "")
            with self._lock:
                value = self.attributes.get((zone, name), {}).get(key)
            if value is None:
                raise _Error(404, "notFound", f"The guest attribute {key} was not found.")
            return {"variableKey": key, "variableValue": value}
        raise _Error(404, "notFound", f"no route zones/{zone}/{'/'.join(parts)}")

    def _insert(self, project: str, zone_url: str, zone: str, body: dict[str, Any]) -> Any:
        name = body["name"]
        machine = body["machineType"].rsplit("/", 1)[-1]
        link = f"{zone_url}/instances/{name}"
        with self._lock:
            if (zone, name) in self.instances:
                raise _Error(409, "alreadyExists", f"The resource '{link}' already exists")
        if machine in self.capacity or f"{machine}@{zone}" in self.capacity:
            return self._operation(
                project, zone, "insert", link,
                error={
                    "code": "ZONE_RESOURCE_POOL_EXHAUSTED",
                    "message": f"The zone '{zone}' does not have enough resources available "
                    "to fulfill the request. Try a different zone, or try again later.",
                },
            )  # fmt: skip
        metadata = {i["key"]: i.get("value", "") for i in body.get("metadata", {}).get("items", [])}
        script = metadata.get("startup-script", "")
        authorized = metadata.get("ssh-keys", "").split(":", 1)[-1]
        host_key = host_key_from(script)
        host = self.backing.start(f"{zone}/{name}", host_key, authorized)
        public = asyncssh.import_private_key(host_key).export_public_key().decode().strip()
        vm = {
            **body,
            "id": str(next(self._ids)),
            "kind": "compute#instance",
            "status": "RUNNING",
            "zone": zone_url,
            "selfLink": link,
            "machineType": f"{zone_url}/machineTypes/{machine}",
            "networkInterfaces": [
                {
                    "name": "nic0",
                    "network": f"{zone_url}/../../global/networks/default",
                    "networkIP": host,
                    "accessConfigs": [
                        {"name": "External NAT", "type": "ONE_TO_ONE_NAT", "natIP": host}
                    ],
                }
            ],
        }
        with self._lock:
            self.instances[(zone, name)] = vm
            if metadata.get("enable-guest-attributes", "").upper() == "TRUE":
                self.attributes[(zone, name)] = {"skyward/host-key": public}
        return self._operation(project, zone, "insert", link)

    def _operation(
        self,
        project: str,
        zone: str | None,
        kind: str,
        target: str,
        error: dict[str, str] | None = None,
        done: bool = False,
        status_message: str = "",
    ) -> dict[str, Any]:
        number = next(self._ids)
        where = f"zones/{zone}" if zone else "global"
        operation: dict[str, Any] = {
            "kind": "compute#operation",
            "id": str(number),
            "name": f"operation-{number}",
            "operationType": kind,
            "targetLink": target,
            "status": "DONE" if done else "RUNNING",
            "selfLink": f"{self.endpoint}/compute/v1/projects/{project}/{where}/"
            f"operations/operation-{number}",
        }
        if zone:
            operation["zone"] = f"{self.endpoint}/compute/v1/projects/{project}/zones/{zone}"
        if status_message:
            operation["statusMessage"] = status_message
        if error:
            operation["error"] = {"errors": [error]}
            operation["httpErrorStatusCode"] = 503
        with self._lock:
            self.operations[operation["name"]] = operation
        return dict(operation)

    def _wait(self, name: str, wait: bool) -> Any:
        with self._lock:
            operation = self.operations.get(name)
            if operation is None:
                raise _Error(404, "notFound", f"The resource 'operations/{name}' was not found")
            if wait:
                operation["status"] = "DONE"
            return dict(operation)
