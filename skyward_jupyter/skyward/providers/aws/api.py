"""boto3, imported lazily, and every EC2/SSM call through one retrying, translating door.

botocore's own retries are turned off: it does not honour ``Retry-After`` and cannot tell
a capacity error (try another offer) from a server error (try again). Here a throttle or
5xx is retried with backoff, a capacity code becomes ``CapacityError``, rejected
credentials one line naming what to set, and anything else a ``ProvisionError``.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any

from ...errors import CapacityError, ProvisionError
from .catalog import AUTH_CODES, CAPACITY_CODES, THROTTLE_CODES

__all__ = ["ENDPOINT_ENV", "CREDENTIALS_HINT", "Ec2Api", "import_boto3"]

log = logging.getLogger("skyward")

ENDPOINT_ENV = "SKYWARD_AWS_ENDPOINT"
CREDENTIALS_HINT = (
    "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE (see `aws configure`)"
)
MAX_ATTEMPTS = 6
MAX_WAIT = 30.0


def import_boto3() -> Any:
    """boto3, or an ImportError that names the extra to install."""
    try:
        import boto3
    except ImportError as exc:
        raise ImportError(
            'the aws provider needs boto3: pip install "skyward-jupyter[aws]"'
        ) from exc
    return boto3


def _retry_after(headers: dict[str, str]) -> float | None:
    value = headers.get("retry-after") or headers.get("Retry-After")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


class Ec2Api:
    """EC2 and SSM clients of one session, per region, called off the loop with retries."""

    def __init__(self, session: Any, endpoint: str | None) -> None:
        from botocore.config import Config

        self.session = session
        self.endpoint = endpoint
        self._config = Config(
            retries={"total_max_attempts": 1},
            connect_timeout=10,
            read_timeout=60,
            user_agent_extra="skyward-jupyter",
        )
        self._clients: dict[tuple[str, str], Any] = {}

    def client(self, service: str, region: str) -> Any:
        key = (service, region)
        if key not in self._clients:
            self._clients[key] = self.session.client(
                service, region_name=region, endpoint_url=self.endpoint, config=self._config
            )
        return self._clients[key]

    async def call(self, region: str, operation: str, service: str = "ec2", **kwargs: Any) -> Any:
        """``client.operation(**kwargs)`` in a thread; retried, errors translated."""
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        method = getattr(self.client(service, region), operation)
        delay = 0.5
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                return await asyncio.to_thread(method, **kwargs)
            except ClientError as exc:
                error = exc.response.get("Error", {})
                code, message = error.get("Code", ""), error.get("Message", "")
                meta = exc.response.get("ResponseMetadata", {})
                status = int(meta.get("HTTPStatusCode") or 0)
                if code in CAPACITY_CODES:
                    raise CapacityError(f"AWS has no capacity ({code}): {message}") from exc
                if code in AUTH_CODES or status in (401, 403) and not code.startswith("Invalid"):
                    raise ProvisionError(
                        f"AWS rejected the credentials ({code}): {CREDENTIALS_HINT}"
                    ) from exc
                transient = status == 429 or status >= 500 or code in THROTTLE_CODES
                if not transient or attempt == MAX_ATTEMPTS:
                    raise ProvisionError(f"AWS {operation} failed: {code}: {message}") from exc
                wait = _retry_after(meta.get("HTTPHeaders", {}))
                if wait is None:
                    wait = delay * (1 + random.random() / 4)
                    delay = min(delay * 2, MAX_WAIT)
                wait = min(wait, MAX_WAIT)
                log.info("skyward: AWS %s answered %s %s; retrying in %.1f s",
                         operation, status, code, wait)  # fmt: skip
                await asyncio.sleep(wait)
            except NoCredentialsError as exc:
                raise ProvisionError(f"no AWS credentials found: {CREDENTIALS_HINT}") from exc
            except BotoCoreError as exc:
                raise ProvisionError(f"AWS {operation} failed: {exc}") from exc
        raise AssertionError("unreachable")  # pragma: no cover
