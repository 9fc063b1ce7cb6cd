"""google-cloud-compute, imported lazily, and every call through one retrying door.

Calls run in a thread; 429 and 5xx go through the providers' one retry policy
(:mod:`..retry`: ``Retry-After`` honoured, else backoff with jitter);
a stockout becomes ``CapacityError``; rejected credentials one line naming what to set.
Operations are waited on through our own operations clients, built with the same
endpoint and credentials (``operation.result()`` would poll the real API: FACTS.md).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

from ...errors import CapacityError, ProvisionError
from ..retry import Retry, retry_after, retrying
from .catalog import CAPACITY_CODES

__all__ = ["CREDENTIALS_HINT", "ENDPOINT_ENV", "ComputeApi"]

log = logging.getLogger("skyward")

ENDPOINT_ENV = "SKYWARD_GCP_ENDPOINT"
CREDENTIALS_HINT = (
    "set GOOGLE_APPLICATION_CREDENTIALS to a service-account key file, "
    "or run `gcloud auth application-default login`"
)
MAX_ATTEMPTS = 6
MAX_WAIT = 30.0


def _retry_after(exc: Any) -> float | None:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None) or {}
    return retry_after(headers.get("Retry-After"))


class ComputeApi:
    """The Compute clients of one project, called off the loop with retries."""

    def __init__(self, project: str | None, endpoint: str | None) -> None:
        try:
            from google.api_core.client_options import ClientOptions
            from google.auth.exceptions import DefaultCredentialsError
            from google.cloud import compute_v1
        except ImportError as exc:
            raise ImportError(
                'the gcp provider needs google-cloud-compute: pip install "skyward-jupyter[gcp]"'
            ) from exc
        self.compute = compute_v1
        self.endpoint = endpoint
        options: dict[str, Any] = {"transport": "rest"}
        if endpoint:
            from google.auth.credentials import AnonymousCredentials

            credentials: Any = AnonymousCredentials()  # type: ignore[no-untyped-call]
            options["client_options"] = ClientOptions(api_endpoint=endpoint)
            found_project = None
        else:
            import google.auth

            try:
                credentials, found_project = google.auth.default(
                    scopes=["https://www.googleapis.com/auth/cloud-platform"]
                )
            except DefaultCredentialsError as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                raise ProvisionError(
                    f"no usable Google Cloud credentials ({first.rstrip('.')}): {CREDENTIALS_HINT}"
                ) from exc
        self.project = (
            project
            or os.environ.get("GOOGLE_CLOUD_PROJECT")
            or os.environ.get("CLOUDSDK_CORE_PROJECT")
            or found_project
        )
        if not self.project:
            raise ProvisionError(
                "no Google Cloud project: set GOOGLE_CLOUD_PROJECT (or CLOUDSDK_CORE_PROJECT)"
            )
        options["credentials"] = credentials
        c = compute_v1
        self.instances = c.InstancesClient(**options)
        self.firewalls = c.FirewallsClient(**options)
        self.machine_types = c.MachineTypesClient(**options)
        self.accelerator_types = c.AcceleratorTypesClient(**options)
        self.zones = c.ZonesClient(**options)
        self.zone_operations = c.ZoneOperationsClient(**options)
        self.global_operations = c.GlobalOperationsClient(**options)

    async def call(self, method: Any, **kwargs: Any) -> Any:
        """``method(**kwargs)`` in a thread; retried, errors translated (NotFound kept)."""
        name = getattr(method, "__name__", "call")

        async def attempt(number: int) -> Any:
            return await self._once(method, name, kwargs)

        return await retrying(
            attempt, what=f"Google Cloud {name}", attempts=MAX_ATTEMPTS, max_wait=MAX_WAIT,
            logger=log,
        )  # fmt: skip

    async def _once(self, method: Any, name: str, kwargs: dict[str, Any]) -> Any:
        from google.api_core import exceptions as gexc
        from google.auth.exceptions import GoogleAuthError

        try:
            return await asyncio.to_thread(method, timeout=60.0, **kwargs)
        except (gexc.NotFound, gexc.Conflict):
            raise
        except GoogleAuthError as exc:
            # A refused token (or one that cannot be refreshed) after a 401.
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc)
            raise ProvisionError(
                f"Google Cloud rejected the credentials ({reason}): {CREDENTIALS_HINT}"
            ) from exc
        except gexc.GoogleAPICallError as exc:
            text = f"{exc.message}" if getattr(exc, "message", "") else str(exc)
            if any(code in str(exc) for code in CAPACITY_CODES):
                raise CapacityError(f"Google Cloud has no capacity: {text}") from exc
            if isinstance(exc, gexc.Unauthorized):
                raise ProvisionError(
                    f"Google Cloud rejected the credentials: {CREDENTIALS_HINT}"
                ) from exc
            if isinstance(exc, gexc.Forbidden):
                raise ProvisionError(
                    f"Google Cloud refused {name} in project {self.project} ({text}): "
                    "check the credentials' roles and that the Compute API is enabled"
                ) from exc
            code = int(getattr(exc, "code", 0) or 0)
            failed = ProvisionError(f"Google Cloud {name} failed: {code} {text}")
            failed.__cause__ = exc
            if code == 429 or code >= 500:
                raise Retry(f"HTTP {code}", wait=_retry_after(exc), final=failed) from exc
            raise failed from exc

    async def wait(self, operation: Any, zone: str | None, timeout: float = 600.0) -> Any:
        """Wait for ``operation`` to be DONE; raise with its error (stockouts as capacity)."""
        deadline = time.monotonic() + timeout
        while getattr(operation.status, "name", operation.status) != "DONE":
            if time.monotonic() > deadline:
                raise ProvisionError(
                    f"Google Cloud operation {operation.name} not done within {timeout:.0f} s"
                )
            if zone:
                operation = await self.call(
                    self.zone_operations.wait,
                    project=self.project, zone=zone, operation=operation.name,
                )  # fmt: skip
            else:
                operation = await self.call(
                    self.global_operations.wait, project=self.project, operation=operation.name
                )
        errors = list(operation.error.errors) if operation.error else []
        if errors:
            codes = [e.code for e in errors]
            text = "; ".join(f"{e.code}: {e.message}" for e in errors)
            if any(code in CAPACITY_CODES for code in codes):
                raise CapacityError(f"Google Cloud has no capacity: {text}")
            if operation.http_error_status_code in (401,):
                raise ProvisionError(f"Google Cloud rejected the credentials: {CREDENTIALS_HINT}")
            raise ProvisionError(f"Google Cloud {operation.operation_type} failed: {text}")
        return operation
