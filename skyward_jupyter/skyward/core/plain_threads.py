"""An executor for ``asyncio.to_thread`` that still works at interpreter exit.

Why: ``atexit`` handlers run after ``threading`` has shut ``concurrent.futures`` down, so
a ``ThreadPoolExecutor`` there refuses new work ("cannot schedule new futures after
interpreter shutdown"), and importing it there fails ("can't register atexit after
shutdown"). The loop that destroys a kernel's instances at exit gets this executor as its
default: each call runs in a plain thread of its own, which Python still starts then.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

__all__ = ["PlainThreadExecutor"]

T = TypeVar("T")


class PlainThreadExecutor(ThreadPoolExecutor):
    """One daemon thread per call (a ``ThreadPoolExecutor`` only in type: asyncio
    accepts no other kind as a loop's default executor)."""

    def __init__(self) -> None:
        super().__init__(max_workers=1, thread_name_prefix="skyward-exit")

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        future: Future[T] = Future()

        def run() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as exc:
                future.set_exception(exc)

        threading.Thread(target=run, name="skyward-exit-call", daemon=True).start()
        return future
