"""The event bus: typed subscriptions, publish, and request/reply through ``reply_to``.

Handlers run synchronously inside :meth:`EventBus.publish`, in subscription order, so the
order in which facts are published is the order every subscriber sees. A handler may
return an awaitable; the bus then runs it as a task it owns. A failing handler is logged
and never breaks the publisher.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from ..events import Event, ReplyTo

if TYPE_CHECKING:
    from .outputs import Output

__all__ = ["EventBus", "Handler"]

log = logging.getLogger("skyward")

Handler = Callable[[Any], Any]
E = TypeVar("E")


class EventBus:
    """Delivers events to the handlers subscribed to their type (or to every event)."""

    def __init__(self) -> None:
        self._handlers: dict[type, list[Handler]] = {}
        self._everything: list[Handler] = []
        self._tasks: set[asyncio.Task[Any]] = set()

    def subscribe(self, types: type | tuple[type, ...], handler: Handler) -> Callable[[], None]:
        """Call ``handler`` for each published event of ``types``; returns an unsubscriber."""
        kinds = types if isinstance(types, tuple) else (types,)
        for kind in kinds:
            self._handlers.setdefault(kind, []).append(handler)

        def unsubscribe() -> None:
            for kind in kinds:
                handlers = self._handlers.get(kind, [])
                if handler in handlers:
                    handlers.remove(handler)

        return unsubscribe

    def subscribe_all(self, handler: Handler) -> Callable[[], None]:
        """Call ``handler`` for every event (recorders, the panel)."""
        self._everything.append(handler)
        return lambda: self._everything.remove(handler) if handler in self._everything else None

    def wants(self, kind: type) -> bool:
        """Whether publishing an event of ``kind`` would reach anyone."""
        return bool(self._everything) or bool(self._handlers.get(kind))

    def publish(self, event: Event | Output) -> None:
        """Hand ``event`` to its subscribers, now, in order."""
        handlers = self._handlers.get(type(event))
        if handlers:
            for handler in tuple(handlers):
                self._call(handler, event)
        for handler in tuple(self._everything):
            self._call(handler, event)

    def _call(self, handler: Handler, event: Event | Output) -> None:
        try:
            result = handler(event)
        except Exception:
            log.exception("skyward: handler %r failed on %s", handler, type(event).__name__)
            return
        if result is not None and inspect.isawaitable(result):
            self.spawn(_as_coroutine(result), name=f"skyward:{type(event).__name__}")

    async def request(self, make: Callable[[ReplyTo], Event], timeout: float | None = None) -> Any:
        """Publish the request ``make(reply_to)`` builds and await the fact that answers it."""
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[Any] = loop.create_future()

        def reply(fact: Any) -> None:
            if not answer.done():
                answer.set_result(fact)

        self.publish(make(reply))
        async with asyncio.timeout(timeout):
            return await answer

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str | None = None) -> asyncio.Task[Any]:
        """Run ``coro`` as a task the bus owns (kept referenced, errors logged)."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._reap)
        return task

    def _reap(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            log.error("skyward: task %s failed", task.get_name(), exc_info=error)

    async def aclose(self) -> None:
        """Cancel the bus's tasks and wait for them to end."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


async def _as_coroutine(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


def respond(bus: EventBus, request: Any, fact: Any) -> None:
    """Publish ``fact`` and hand it to the request's ``reply_to``, if any."""
    bus.publish(fact)
    if request.reply_to is not None:
        request.reply_to(fact)
