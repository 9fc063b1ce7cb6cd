"""The one retry policy every cloud call goes through (providers/retry.py, on tenacity):
what it retries, how long it waits, and what it raises when no attempt is left."""

from __future__ import annotations

import email.utils
import time

import pytest
from skyward.errors import CapacityError, ProvisionError
from skyward.providers.retry import Retry, retry_after, retrying


def test_retry_after_reads_seconds_and_http_dates():
    assert retry_after("2.5") == 2.5 and retry_after("-3") == 0.0
    later = retry_after(email.utils.formatdate(time.time() + 30, usegmt=True))
    assert later is not None and 28 <= later <= 30
    assert retry_after("soon") is None and retry_after(None) is None


async def test_the_wait_the_server_asked_for_is_honoured_and_capped():
    tries: list[float] = []

    async def attempt(number: int) -> str:
        tries.append(time.monotonic())
        if number < 3:
            raise Retry("HTTP 429", wait=0.3 if number == 1 else 60)
        return "done"

    assert await retrying(attempt, what="demo", attempts=5, max_wait=0.2) == "done"
    assert tries[1] - tries[0] >= 0.2 and tries[2] - tries[1] < 1.0


async def test_after_the_last_attempt_the_final_error_or_one_line():
    calls = []

    async def refuse(number: int) -> None:
        calls.append(number)
        raise Retry("HTTP 503", final=ProvisionError("AWS run_instances failed: 503"))

    with pytest.raises(ProvisionError, match="^AWS run_instances failed: 503$"):
        await retrying(refuse, what="AWS run_instances", attempts=3, backoff=0.01)
    assert calls == [1, 2, 3]

    async def flaky(number: int) -> None:
        raise Retry("HTTP 500")

    with pytest.raises(ProvisionError, match=r"^demo: HTTP 500 after 2 attempts in \d+ s$"):
        await retrying(flaky, what="demo", attempts=2, backoff=0.01)


async def test_any_other_error_ends_it_at_once():
    calls = []

    async def full(number: int) -> None:
        calls.append(number)
        raise CapacityError("no machines")

    with pytest.raises(CapacityError):
        await retrying(full, what="demo", attempts=5, backoff=0.01)
    assert calls == [1]
