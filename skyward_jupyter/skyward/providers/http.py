"""One async HTTP helper for the providers that speak plain HTTPS JSON APIs.

Why one: every cloud API rate-limits (429), has bad minutes (5xx), rejects stale keys
(401/403) and runs out of machines, each in its own words. The helper retries only the
named transient answers (429, 5xx, a dropped connection) with exponential backoff and
jitter, honours ``Retry-After``, stops at a deadline, and turns everything else into one
clear :class:`~skyward.errors.ProvisionError` line. A provider adds its own words for "no
capacity" through ``classify``.

A fresh ``httpx.AsyncClient`` is used per call: providers are also called from a helper
thread's loop at interpreter exit, and a client must not outlive the loop it was made on.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import httpx

from ..errors import ProvisionError

__all__ = ["ApiClient", "Classifier", "backoff_delays", "env_endpoint", "short_text"]

log = logging.getLogger("skyward.providers.http")

Classifier = Callable[[int, Any], Exception | None]
"""``(status, parsed body) -> exception to raise, or None``: a provider's own errors, for
every answer but the transient ones (429, 5xx), which are retried first."""

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


def backoff_delays(base: float, cap: float) -> Callable[[int], float]:
    """Exponential backoff with jitter: ``attempt`` -> seconds to wait."""

    def delay(attempt: int) -> float:
        return min(cap, base * 2**attempt) * (0.5 + random.random() / 2)

    return delay


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


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
        self._delay = backoff_delays(backoff, max_backoff)
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
    ) -> Any:
        """One API call; the parsed body (None for an empty one, or 404 if ``missing_ok``).

        ``reconcile`` makes a non-idempotent call (a launch) safe to retry: before each
        retry it looks for what the failed attempt may have created anyway, and its
        answer, if not None, is returned instead of trying again.
        """
        what = f"{self.provider} API {method} {path}"
        started = time.monotonic()
        attempt = 0
        try:
            async with asyncio.timeout(self.deadline):
                while True:
                    problem, wait = await self._attempt(method, path, json, params, ok, missing_ok)
                    if problem is None:
                        return wait  # the parsed body
                    attempt += 1
                    if attempt >= self.attempts:
                        raise ProvisionError(
                            f"{what}: {problem} after {attempt} attempts "
                            f"in {time.monotonic() - started:.0f} s"
                        )
                    delay = wait if wait is not None else self._delay(attempt - 1)
                    log.info("%s: %s; retrying in %.1f s", what, problem, delay)
                    await asyncio.sleep(delay)
                    if reconcile is not None:
                        found = await reconcile()
                        if found is not None:
                            return found
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
    ) -> tuple[str | None, Any]:
        """``(None, body)`` on success, ``(problem, wait or None)`` for a retryable answer."""
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
            return f"cannot reach {self.base_url} ({type(exc).__name__})", None
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__} talking to {self.base_url}", None
        status = response.status_code
        body = _parse(response)
        if status in TRANSIENT:
            wait = _retry_after(response) if status in (429, 503) else None
            return f"HTTP {status}", wait
        if self._classify is not None:
            mapped = self._classify(status, body)
            if mapped is not None:
                raise mapped
        if status in (401, 403):
            raise ProvisionError(
                f"{self.provider} rejected the credentials (HTTP {status}: "
                f"{short_text(body)}): check {self.credential}"
            )
        if status == 404 and missing_ok:
            return None, None
        if status not in ok:
            raise ProvisionError(
                f"{self.provider} API {method} {path}: HTTP {status}: {short_text(body)}"
            )
        return None, body
