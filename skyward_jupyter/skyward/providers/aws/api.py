"""boto3, imported lazily, and every EC2/SSM call through one retrying, translating door.

botocore's own retries are turned off: its modes do not honour ``Retry-After`` and cannot
tell a capacity error (try another offer) from a server error (try again). Here a throttle
or 5xx goes through the providers' one retry policy (:mod:`..retry`), a capacity code
becomes ``CapacityError``, rejected credentials one line naming what to set, and anything
else a ``ProvisionError``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ...errors import CapacityError, ProvisionError
from ..retry import Retry, retry_after, retrying
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
        method = getattr(self.client(service, region), operation)

        async def attempt(number: int) -> Any:
            return await self._once(method, operation, kwargs)

        return await retrying(
            attempt, what=f"AWS {operation}", attempts=MAX_ATTEMPTS, max_wait=MAX_WAIT, logger=log
        )

    async def _once(self, method: Any, operation: str, kwargs: dict[str, Any]) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

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
            failed = ProvisionError(f"AWS {operation} failed: {code}: {message}")
            failed.__cause__ = exc
            if status == 429 or status >= 500 or code in THROTTLE_CODES:
                headers = {k.lower(): v for k, v in meta.get("HTTPHeaders", {}).items()}
                raise Retry(
                    f"HTTP {status} {code}", wait=retry_after(headers.get("retry-after")),
                    final=failed,
                ) from exc  # fmt: skip
            raise failed from exc
        except NoCredentialsError as exc:
            raise ProvisionError(f"no AWS credentials found: {CREDENTIALS_HINT}") from exc
        except BotoCoreError as exc:
            raise ProvisionError(f"AWS {operation} failed: {exc}") from exc
