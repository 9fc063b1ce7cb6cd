"""A local EC2 (and SSM) for tests: moto's server in-process, behind a small middleware.

moto answers the documented EC2 API; the middleware adds what moto does not model:
instances backed by real local SSH nodes (whose address becomes the instance's public
and private IP), capacity errors, throttling with ``Retry-After``, one-off server errors,
rejected credentials, and spot interruptions.
"""

from __future__ import annotations

import base64
import io
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

from moto.core import DEFAULT_ACCOUNT_ID
from moto.ec2.models import ec2_backends
from moto.ec2.models.instances import StateReason
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from moto.ssm.models import Parameter, ssm_backends
from skyward.providers.aws.catalog import AMI_PARAMETERS
from werkzeug.serving import make_server

from .backing import BackingNodes, host_key_from

__all__ = ["AwsSimulator"]

_REGION = re.compile(r"Credential=[^/]+/\d+/([a-z0-9-]+)/")
_INSTANCE_ID = re.compile(r"<instanceId>(i-[0-9a-f]+)</instanceId>")
_AUTHORIZED = re.compile(r"ssh_authorized_keys:\s*\n\s*-\s*(.+)")
SPOT_MESSAGE = "Server.SpotInstanceTermination: Spot instance termination"


@dataclass
class _Fault:
    action: str
    status: int
    code: str
    times: int
    retry_after: float | None = None


class _QuietHandler(MotoRequestHandler):
    def log_request(self, *args: Any, **kwargs: Any) -> None:
        pass


def _error(status: int, code: str, message: str, headers: Iterable[tuple[str, str]] = ()) -> Any:
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error>'
        f"<Code>{code}</Code><Message>{message}</Message></Error></Errors>"
        "<RequestID>sim-0000</RequestID></Response>"
    ).encode()
    reason = {401: "Unauthorized", 429: "Too Many Requests", 500: "Internal Server Error"}
    return (
        f"{status} {reason.get(status, 'Error')}",
        [("Content-Type", "text/xml"), ("Content-Length", str(len(body))), *headers],
        body,
    )


class AwsSimulator:
    """moto on 127.0.0.1, with real nodes behind instances and injectable failures."""

    def __init__(self) -> None:
        ec2_backends.reset()
        ssm_backends.reset()
        self.backing = BackingNodes()
        self._user_data: dict[str, str] = {}
        self.app = DomainDispatcherApplication(create_backend_app)
        self.calls: list[tuple[str, int]] = []  # (action, HTTP status) of every request
        self.capacity_types: set[str] = set()
        self.reject_credentials = False
        self._faults: list[_Fault] = []
        self._lock = threading.Lock()
        self._ready_regions: set[str] = set()
        self._server = make_server(
            "127.0.0.1", 0, self._wsgi, threaded=True, request_handler=_QuietHandler
        )
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # -- what tests tell it -------------------------------------------------------------

    def fail(
        self,
        action: str,
        status: int,
        code: str,
        times: int = 1,
        retry_after: float | None = None,
    ) -> None:
        """Answer the next ``times`` requests of ``action`` with this error."""
        with self._lock:
            self._faults.append(_Fault(action, status, code, times, retry_after))

    def preempt(self, instance_id: str, region: str = "us-east-1") -> None:
        """Interrupt a spot instance as AWS does: node gone, terminated, spot reason."""
        self.backing.stop(instance_id)
        instance = self._ec2(region).get_instance(instance_id)
        instance.terminate()
        instance.state_reason = StateReason(SPOT_MESSAGE, "Server.SpotInstanceTermination")

    # -- what tests check ---------------------------------------------------------------

    def live_instances(self, region: str = "us-east-1") -> list[str]:
        ec2 = self._ec2(region)
        return [
            i.id
            for reservation in ec2.describe_instances()
            for i in reservation.instances
            if i.state != "terminated"
        ]

    def cluster_resources(self, region: str = "us-east-1") -> list[str]:
        """Security groups and key pairs other than the default ones."""
        ec2 = self._ec2(region)
        groups = [g.name for g in ec2.describe_security_groups() if g.name != "default"]
        keys = [k.key_name for k in ec2.describe_key_pairs([])]
        return groups + keys

    def ingress(self, region: str = "us-east-1") -> list[tuple[str, int | str, list[str]]]:
        """(group, port or "all", sources) of every non-default group's ingress rules; a
        source is a CIDR or, for a rule that admits another group's members, that group's
        name."""
        ec2 = self._ec2(region)
        names = {g.id: g.name for g in ec2.describe_security_groups()}
        found: list[tuple[str, int | str, list[str]]] = []
        for group in ec2.describe_security_groups():
            if group.name == "default":
                continue
            for rule in group.ingress_rules:
                port = "all" if rule.ip_protocol == "-1" else int(rule.from_port)
                if rule.source_group:
                    source = names.get(rule.source_group.get("GroupId", ""), "?")
                else:
                    source = rule.ip_range.get("CidrIp", "")
                found.append((group.name, port, [source]))
        return found

    def user_data(self, instance_id: str, region: str = "us-east-1") -> str:
        return self._user_data.get(instance_id, "")

    def close(self) -> None:
        self._server.shutdown()
        self._thread.join(5)
        self.backing.close()

    # -- the middleware -----------------------------------------------------------------

    def _ec2(self, region: str) -> Any:
        return ec2_backends[DEFAULT_ACCOUNT_ID][region]

    def _publish_amis(self, region: str) -> None:
        """The SSM public parameters naming AMIs, as AWS publishes them in every region."""
        if region in self._ready_regions:
            return
        parameters = ssm_backends[DEFAULT_ACCOUNT_ID][region]._parameters
        for name in AMI_PARAMETERS.values():
            if not parameters.get(name):
                parameters[name].append(
                    Parameter(
                        account_id=DEFAULT_ACCOUNT_ID, name=name, value="ami-0abcdef1234567890",
                        parameter_type="String", description=None, allowed_pattern=None,
                        keyid=None, last_modified_date=datetime.now(UTC), version=1,
                        data_type="aws:ec2:image",
                    )
                )  # fmt: skip
        self._ready_regions.add(region)

    def _take_fault(self, action: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.action in (action, "*") and fault.times > 0:
                    fault.times -= 1
                    return fault
        return None

    def _wsgi(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(body)
        params = {k: v[0] for k, v in parse_qs(body.decode(errors="replace")).items()}
        action = params.get("Action", "")
        match = _REGION.search(environ.get("HTTP_AUTHORIZATION", ""))
        region = match.group(1) if match else "us-east-1"
        self._publish_amis(region)
        answer = self._injected(action, params)
        if answer is not None:
            status, headers, payload = answer
            self.calls.append((action, int(status.split()[0])))
            start_response(status, headers)
            return [payload]
        captured: dict[str, Any] = {}

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            captured["status"], captured["headers"] = status, headers
            return lambda data: None

        payload = b"".join(self.app(environ, capture))
        code = int(captured["status"].split()[0])
        self.calls.append((action, code))
        if code == 200 and action == "RunInstances":
            self._back(region, _INSTANCE_ID.findall(payload.decode()), params)
        if code == 200 and action == "TerminateInstances":
            for key, value in params.items():
                if key.startswith("InstanceId."):
                    self.backing.stop(value)
        start_response(captured["status"], captured["headers"])
        return [payload]

    def _injected(self, action: str, params: dict[str, str]) -> Any:
        if self.reject_credentials and action:
            return _error(401, "AuthFailure", "AWS was not able to validate the credentials.")
        fault = self._take_fault(action)
        if fault is not None:
            headers = []
            if fault.retry_after is not None:
                headers.append(("Retry-After", f"{fault.retry_after:g}"))
            return _error(fault.status, fault.code, f"simulated {fault.code}", headers)
        kind = params.get("InstanceType", "")
        if action == "RunInstances" and kind in self.capacity_types:
            return _error(
                500,
                "InsufficientInstanceCapacity",
                f"We currently do not have sufficient {kind} capacity in the Availability "
                "Zone you requested (us-east-1a).",
            )
        return None

    def _back(self, region: str, instance_ids: list[str], params: dict[str, str]) -> None:
        """Start a real node per new instance and make its address the instance's IPs."""
        text = base64.b64decode(params.get("UserData", "")).decode()
        authorized = _AUTHORIZED.search(text)
        for iid in dict.fromkeys(instance_ids):
            self._user_data[iid] = text
            host = self.backing.start(
                iid, host_key_from(text), authorized.group(1) if authorized else ""
            )
            nic = self._ec2(region).get_instance(iid).nics[0]
            nic.public_ip = host
            nic.private_ip_address = host
