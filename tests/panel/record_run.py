"""Records the event log of a real 2-node run (container provider) for the fold tests.

Not a test: run it by hand to refresh ``data/two-node-run.jsonl``::

    .venv/bin/python -m tests.panel.record_run
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

from skyward.jupyter.panel.eventlog import Recorder
from skyward.model import ClusterSpec
from skyward.session import Session

OUT = Path(__file__).parent / "data" / "two-node-run.jsonl"

CELL = """
import os, sys, time
from tqdm import tqdm
print("hello from node", os.environ["SKYWARD_NODE"])
for i in tqdm(range(50), mininterval=0.05):
    time.sleep(0.01)
print("\\x1b[32mgreen\\x1b[0m and \\x1b[1;31mbold red\\x1b[0m", file=sys.stderr)
import skyward
for i in range(5):
    skyward.metric("loss", 1.0 / (i + 1))
time.sleep(2.5)
"""


async def main() -> None:
    start = time.time()
    pool = Session()
    with OUT.open("w", encoding="utf-8") as fh:
        pool.bus.subscribe_all(Recorder(fh, lambda: time.time() - start))
        spec = ClusterSpec(
            provider="container",
            nodes=2,
            pip=("tqdm",),
            python="{}.{}".format(*sys.version_info[:2]),
        )
        await pool.up(spec)
        cell = pool.prepare(await pool.select(None))
        await pool.run(cell, CELL, "<skyward-cell-1>")
        for node, answer in cell.results.items():
            print(node, answer if isinstance(answer, BaseException) else answer.get("ok"))
        await pool.down()
        await pool.aclose()
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    asyncio.run(main())
