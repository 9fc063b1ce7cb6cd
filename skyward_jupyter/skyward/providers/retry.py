"""One retry policy for every cloud call: the HTTP APIs, boto3 and google-cloud-compute.

Why one: a cloud answers "slow down" (429, a throttling code) and "bad minute" (5xx, a
dropped connection) in its own words, but what to do about it is the same everywhere:
wait (what the server asked for in ``Retry-After``, else exponential backoff with
jitter), try again a bounded number of times, log each retry, and then fail with one
clear line. The loop is tenacity's; a caller only says which answers are worth another
try by raising :class:`Retry` from its attempt.
"""

from __future__ import annotations

import email.utils
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import tenacity

from ..errors import ProvisionError

__all__ = ["Retry", "backoff_delay", "retry_after", "retrying"]

T = TypeVar("T")


class Retry(Exception):
    """An answer worth another try: what it was, the wait the server asked for, and what
    to raise if no attempt is left (a line naming the attempts, if None)."""

    def __init__(
        self, problem: str, *, wait: float | None = None, final: Exception | None = None
    ) -> None:
        super().__init__(problem)
        self.problem = problem
        self.wait = wait
        self.final = final


def retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` value: a number of seconds or an HTTP date."""
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


def backoff_delay(attempt: int, base: float, cap: float) -> float:
    """Exponential backoff with jitter: seconds to wait after the ``attempt``-th failure."""
    return min(cap, base * 2.0 ** (attempt - 1)) * (0.5 + random.random() / 2)


async def retrying(
    attempt: Callable[[int], Awaitable[T]],
    *,
    what: str,
    attempts: int,
    backoff: float = 0.5,
    max_backoff: float = 20.0,
    max_wait: float | None = None,
    logger: logging.Logger | None = None,
) -> T:
    """``await attempt(n)`` for n = 1, 2, … until it returns, retrying on :class:`Retry`.

    Between attempts it waits what the server asked for (capped at ``max_wait``, if
    given), else exponential backoff with jitter. After ``attempts`` tries it raises
    the last answer's ``final`` exception, or a :class:`ProvisionError` that names
    ``what``, the problem and the attempts. Any other exception ends it at once.
    """
    log = logger or logging.getLogger("skyward.providers")
    started = time.monotonic()

    def wait(state: tenacity.RetryCallState) -> float:
        failure = state.outcome.exception() if state.outcome else None
        asked = failure.wait if isinstance(failure, Retry) else None
        if asked is None:
            return backoff_delay(state.attempt_number, backoff, max_backoff)
        return asked if max_wait is None else min(asked, max_wait)

    def before_sleep(state: tenacity.RetryCallState) -> None:
        failure = state.outcome.exception() if state.outcome else None
        delay = state.next_action.sleep if state.next_action else 0.0
        log.info("%s: %s; retrying in %.1f s", what, failure, delay)

    controller = tenacity.AsyncRetrying(
        stop=tenacity.stop_after_attempt(attempts),
        wait=wait,
        retry=tenacity.retry_if_exception_type(Retry),
        before_sleep=before_sleep,
        reraise=True,
    )
    try:
        async for trial in controller:
            with trial:
                return await attempt(trial.retry_state.attempt_number)
    except Retry as exc:
        if exc.final is not None:
            raise exc.final from exc.final.__cause__
        tried = controller.statistics.get("attempt_number", attempts)
        raise ProvisionError(
            f"{what}: {exc.problem} after {tried} attempts in {time.monotonic() - started:.0f} s"
        ) from None
    raise AssertionError("unreachable")  # pragma: no cover
