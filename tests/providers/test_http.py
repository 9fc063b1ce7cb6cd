"""The shared HTTP helper: which answers are retried, how long it waits, and the one line
the user sees for everything else (httpx.MockTransport: no network)."""

from __future__ import annotations

import email.utils
import time

import httpx
import pytest
from skyward.errors import CapacityError, ProvisionError
from skyward.providers.http import ApiClient


def client(answers, **kw):
    calls = []

    def handle(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        answer = answers[min(len(calls), len(answers)) - 1]
        return answer(request) if callable(answer) else answer

    kw.setdefault("backoff", 0.01)
    api = ApiClient(
        "demo", "http://demo.invalid", "DEMO_KEY", transport=httpx.MockTransport(handle), **kw
    )
    return api, calls


async def test_retry_after_as_an_http_date_is_honoured():
    when = email.utils.formatdate(time.time() + 1.2, usegmt=True)
    api, calls = client(
        [httpx.Response(429, headers={"Retry-After": when}), httpx.Response(200, json=[1])]
    )
    start = time.monotonic()
    assert await api.call("GET", "/x") == [1]
    assert time.monotonic() - start >= 0.2 and len(calls) == 2


async def test_5xx_until_the_attempts_run_out_is_one_clear_line():
    api, calls = client([httpx.Response(503)], attempts=3)
    with pytest.raises(ProvisionError, match=r"^demo API GET /x: HTTP 503 after 3 attempts in"):
        await api.call("GET", "/x")
    assert len(calls) == 3


async def test_deadline_bounds_the_whole_call():
    api, _ = client([httpx.Response(429, headers={"Retry-After": "30"})], deadline=0.3)
    with pytest.raises(ProvisionError, match="no answer within the deadline"):
        await api.call("GET", "/x")


async def test_rejected_credentials_name_the_variable_and_are_not_retried():
    api, calls = client([httpx.Response(401, json={"message": "bad key"})])
    with pytest.raises(
        ProvisionError, match=r"demo rejected the credentials \(HTTP 401: bad key\): check DEMO_KEY"
    ):
        await api.call("GET", "/x")
    assert len(calls) == 1


async def test_provider_capacity_answers_and_other_4xx():
    capacity = lambda status, body: CapacityError("full") if status == 409 else None  # noqa: E731
    api, _ = client([httpx.Response(409, json={"message": "no machines"})], classify=capacity)
    with pytest.raises(CapacityError, match="full"):
        await api.call("POST", "/x")
    api, _ = client([httpx.Response(422, json={"detail": "bad field"})])
    with pytest.raises(ProvisionError, match=r"^demo API POST /x: HTTP 422: bad field$"):
        await api.call("POST", "/x")


async def test_reconcile_returns_what_a_lost_create_made():
    api, calls = client([httpx.Response(500), httpx.Response(200, json={"id": "twice"})])

    async def found():
        return "made-by-the-first-attempt"

    assert await api.call("POST", "/create", reconcile=found) == "made-by-the-first-attempt"
    assert len(calls) == 1


async def test_unreachable_endpoint_is_retried_then_named():
    def refuse(request):
        raise httpx.ConnectError("refused", request=request)

    api, calls = client([refuse], attempts=2)
    with pytest.raises(ProvisionError, match=r"cannot reach http://demo.invalid \(ConnectError\)"):
        await api.call("GET", "/x")
    assert len(calls) == 2
