import asyncio

import pytest
from skyward import ClusterDestroyed, Error, Log, ShutdownRequested
from skyward.core.bus import EventBus, respond


async def test_subscribers_get_their_types_in_order():
    bus = EventBus()
    seen = []
    bus.subscribe(ClusterDestroyed, lambda e: seen.append(("a", e.cluster_id)))
    bus.subscribe((ClusterDestroyed, Error), lambda e: seen.append(("b", type(e).__name__)))
    bus.subscribe_all(lambda e: seen.append(("all", type(e).__name__)))
    bus.publish(ClusterDestroyed("c1"))
    bus.publish(Error("r", "m"))
    bus.publish(Log(None, "x"))  # type: ignore[arg-type]
    assert seen == [
        ("a", "c1"),
        ("b", "ClusterDestroyed"),
        ("all", "ClusterDestroyed"),
        ("b", "Error"),
        ("all", "Error"),
        ("all", "Log"),
    ]


async def test_unsubscribe_and_failing_handler_do_not_break_publish(caplog):
    bus = EventBus()
    seen = []

    def broken(event):
        raise ValueError("boom")

    bus.subscribe(ClusterDestroyed, broken)
    off = bus.subscribe(ClusterDestroyed, seen.append)
    bus.publish(ClusterDestroyed("c1"))
    off()
    bus.publish(ClusterDestroyed("c2"))
    assert seen == [ClusterDestroyed("c1")]
    assert "boom" in caplog.text


async def test_async_handlers_run_as_owned_tasks():
    bus = EventBus()
    done = asyncio.Event()

    async def handler(event):
        await asyncio.sleep(0)
        done.set()

    bus.subscribe(ClusterDestroyed, handler)
    bus.publish(ClusterDestroyed("c"))
    await asyncio.wait_for(done.wait(), 1)
    await bus.aclose()


async def test_request_reply_through_reply_to():
    bus = EventBus()

    async def on_shutdown(request: ShutdownRequested):
        await asyncio.sleep(0.01)
        respond(bus, request, ClusterDestroyed(request.cluster_id))

    facts = []
    bus.subscribe(ShutdownRequested, on_shutdown)
    bus.subscribe(ClusterDestroyed, facts.append)
    answer = await bus.request(lambda reply: ShutdownRequested("c9", reply), timeout=1)
    assert answer == ClusterDestroyed("c9")
    assert facts == [answer]


async def test_request_times_out():
    bus = EventBus()
    with pytest.raises(TimeoutError):
        await bus.request(lambda reply: ShutdownRequested("nobody", reply), timeout=0.05)
