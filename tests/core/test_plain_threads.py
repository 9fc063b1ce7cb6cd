"""``asyncio.to_thread`` at interpreter exit, where cloud instances are destroyed after a
clean kernel shutdown: a loop whose default executor is PlainThreadExecutor still runs
it; the stock executor no longer does (the reason the executor exists)."""

from __future__ import annotations

import subprocess
import sys

AT_EXIT = """
import asyncio, atexit, sys, threading
from skyward.core.plain_threads import PlainThreadExecutor

def destroy_at_exit():
    async def destroy():
        if sys.argv[1] == "plain":
            asyncio.get_running_loop().set_default_executor(PlainThreadExecutor())
        return await asyncio.to_thread(lambda: "destroyed")

    def run():
        try:
            print(asyncio.run(destroy()), flush=True)
        except RuntimeError as exc:
            print(f"failed: {exc}", flush=True)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(10)

atexit.register(destroy_at_exit)
"""


def _at_exit(executor: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", AT_EXIT, executor], capture_output=True, text=True, timeout=60
    )
    return done.stdout.strip()


def test_to_thread_runs_at_interpreter_exit_with_plain_threads():
    assert _at_exit("plain") == "destroyed"


def test_the_stock_executor_refuses_work_at_interpreter_exit():
    assert _at_exit("stock").startswith("failed:")
