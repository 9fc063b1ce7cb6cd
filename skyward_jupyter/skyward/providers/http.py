"""One async HTTP helper for the providers that speak plain HTTPS JSON APIs.

Why one: every cloud API rate-limits (429), has bad minutes (5xx), rejects stale keys
(401/403) and runs out of machines, each in its own words. The helper retries only the
named transient answers (429, 5xx, a dropped connection) through the one retry policy of
:mod:`.retry` (``Retry-After`` honoured, else backoff with jitter), stops at a deadline, and
turns everything else into one clear :class:`~skyward.errors.ProvisionError` line. A
provider adds its own words for "no capacity" through ``classify``.

A fresh ``httpx.AsyncClient`` is used per call: providers are also called from a helper
thread's loop at interpreter exit, and a client must not outlive the loop it was made on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import httpx

from ..errors import CapacityError, ProvisionError
from .retry import Retry, retry_after, retrying

__all__ = ["ApiClient", "Classifier", "env_endpoint", "short_text"]

log = logging.getLogger("skyward.providers.http")

Classifier = Callable[[int, Any], Exception | None]
"""``(status, parsed body) -> exception to raise, or None``: a provider's own errors. A
transient answer (429, 5xx) is retried unless the provider calls it a capacity error
(Verda says "not enough resources" with a 503)."""

TRANSIENT = frozenset({429, 500, 502, 503, 504})


def env_endpoint(variable: str, default: str) -> str:
    """The API base from ``variable`` (a test's simulator), else the real API's."""
    import os

    return (os.environ.get(variable) or default).rstrip("/")


def short_text(body: Any, limit: int = 200) -> str:
    """A provider's error body as one short line (its message where it has one)."""
    if isinstance(body, dict):
        for key in ("message", "msg", "error_description", "detail", "error", "code"):
            value = body.get(key)
            if isinstance(value, str) and value:
                return value[:limit]
        errors = body.get("errors")
        if isinstance(errors, list) and errors and isinstance(errors[0], dict):
            return str(errors[0].get("message", errors[0]))[:limit]
    text = " ".join(str(body).split())
    return text[:limit]


def _parse(response: httpx.Response) -> Any:
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        return response.text


class ApiClient:
    """Calls one provider's API: auth headers, retries, deadlines, error mapping.

    ``credential`` names what the user sets (``RUNPOD_API_KEY``) for the line shown when
    the API rejects the credentials. ``auth`` returns the headers of each request (it may
    fetch a token). ``classify`` maps a provider's own answers (capacity, GraphQL errors)
    to exceptions; it sees every answer, successful ones included.
    """

    def __init__(
        self,
        provider: str,
        base_url: str,
        credential: str,
        *,
        auth: Callable[[], Awaitable[Mapping[str, str]]] | None = None,
        classify: Classifier | None = None,
        attempts: int = 6,
        deadline: float = 120.0,
        backoff: float = 0.5,
        max_backoff: float = 20.0,
        request_timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.provider = provider
        self.base_url = base_url.rstrip("/")
        self.credential = credential
        self._auth = auth
        self._classify = classify
        self.attempts = attempts
        self.deadline = deadline
        self._backoff = backoff
        self._max_backoff = max_backoff
        self._timeout = request_timeout
        self._transport = transport

    async def call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        ok: tuple[int, ...] = (200, 201, 202, 204),
        missing_ok: bool = False,
        reconcile: Callable[[], Awaitable[Any]] | None = None,
        classify: Classifier | None = None,
    ) -> Any:
        """One API call; the parsed body (None for an empty one, or 404 if ``missing_ok``).

        ``reconcile`` makes a non-idempotent call (a launch) safe to retry: before each
        retry it looks for what the failed attempt may have created anyway, and its
        answer, if not None, is returned instead of trying again. ``classify`` replaces
        the client's own for this call.
        """
        what = f"{self.provider} API {method} {path}"
        classifier = classify or self._classify

        async def attempt(number: int) -> Any:
            if number > 1 and reconcile is not None:
                found = await reconcile()
                if found is not None:
                    return found
            return await self._attempt(method, path, json, params, ok, missing_ok, classifier)

        try:
            async with asyncio.timeout(self.deadline):
                return await retrying(
                    attempt,
                    what=what,
                    attempts=self.attempts,
                    backoff=self._backoff,
                    max_backoff=self._max_backoff,
                    logger=log,
                )
        except TimeoutError:
            raise ProvisionError(
                f"{what}: no answer within the deadline of {self.deadline:.0f} s"
            ) from None

    async def _attempt(
        self,
        method: str,
        path: str,
        json: Any,
        params: Mapping[str, Any] | None,
        ok: tuple[int, ...],
        missing_ok: bool,
        classify: Classifier | None,
    ) -> Any:
        """The parsed body; :class:`Retry` for an answer worth another try."""
        headers = dict(await self._auth()) if self._auth is not None else {}
        headers.setdefault("Accept", "application/json")
        try:
            async with httpx.AsyncClient(
                base_url=self.base_url,
                timeout=self._timeout,
                transport=self._transport,
                follow_redirects=False,
            ) as client:
                response = await client.request(
                    method, path, json=json, params=params, headers=headers
                )
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError) as exc:
            raise Retry(f"cannot reach {self.base_url} ({type(exc).__name__})") from None
        except httpx.HTTPError as exc:
            raise Retry(f"{type(exc).__name__} talking to {self.base_url}") from None
        status = response.status_code
        body = _parse(response)
        mapped = classify(status, body) if classify is not None else None
        if status in TRANSIENT and not isinstance(mapped, CapacityError):
            asked = response.headers.get("Retry-After") if status in (429, 503) else None
            raise Retry(f"HTTP {status}", wait=retry_after(asked))
        if mapped is not None:
            raise mapped
        if status in (401, 403):
            raise ProvisionError(
                f"{self.provider} rejected the credentials (HTTP {status}: "
                f"{short_text(body)}): check {self.credential}"
            )
        if status == 404 and missing_ok:
            return None
        if status not in ok:
            raise ProvisionError(
                f"{self.provider} API {method} {path}: HTTP {status}: {short_text(body)}"
            )
        return body
