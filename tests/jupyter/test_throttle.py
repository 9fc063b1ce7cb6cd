"""The one throttle of cell output and the panel: a rate, a message budget, a context."""

from __future__ import annotations

import asyncio
import contextvars

from skyward.jupyter.throttle import Throttle


async def _poke_for(throttle: Throttle, seconds: float) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while loop.time() < end:
        throttle.poke()
        await asyncio.sleep(0.001)


async def test_flushes_at_most_rate_a_second():
    flushed = []
    throttle = Throttle(lambda: flushed.append(1), rate=20)
    await _poke_for(throttle, 0.5)
    throttle.cancel()
    assert 8 <= len(flushed) <= 12


async def test_a_poke_from_inside_flush_waits_its_turn():
    loop = asyncio.get_running_loop()
    times: list[float] = []

    def flush() -> None:
        times.append(loop.time())
        if len(times) < 5:
            throttle.poke()

    throttle = Throttle(flush, rate=20)
    throttle.poke()
    await asyncio.sleep(0.4)
    assert len(times) == 5
    assert min(b - a for a, b in zip(times, times[1:], strict=False)) >= 0.045


async def test_messages_sent_stretch_the_wait():
    flushed = []

    def flush() -> int:
        flushed.append(1)
        return 4  # four messages: at 20 a second, the next flush waits 0.2 s

    throttle = Throttle(flush, rate=20, messages=20)
    await _poke_for(throttle, 0.5)
    throttle.cancel()
    assert 2 <= len(flushed) <= 4


async def test_flush_runs_in_the_given_context():
    var: contextvars.ContextVar[str] = contextvars.ContextVar("cell", default="none")
    var.set("the cell that made it")
    context = contextvars.copy_context()
    var.set("a later cell")
    seen = []
    throttle = Throttle(lambda: seen.append(var.get()), rate=20, context=context)
    throttle.poke()
    await asyncio.sleep(0.01)
    assert seen == ["the cell that made it"]
