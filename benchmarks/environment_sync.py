"""Package sync and local-code sync, measured on `container` nodes through a real kernel.

Prints: `up` with package sync into an empty uv cache (first time), the same `up` again
(the cache now warm, as every later `up` on this machine), `up --no-sync-packages`, and
the bytes and time of the local-module sync before a cell when nothing changed.

    .venv/bin/python benchmarks/environment_sync.py
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "integration"))

from kernel import Kernel  # noqa: E402


def timed_up(kernel: Kernel, options: str = "") -> float:
    start = time.monotonic()
    result = kernel.execute(f"%skyward up --provider container {options}", timeout=1800)
    elapsed = time.monotonic() - start
    assert result.ok, result.text()
    line = [ln for ln in result.text().splitlines() if ln.startswith("package sync:")]
    print(f"    {line[0][:110] if line else '(no package sync)'}")
    return elapsed


def main() -> None:
    folder = Path(tempfile.mkdtemp(prefix="bench-"))
    (folder / "helpers.py").write_text("def f(x):\n    return x + 1\n")
    cache = tempfile.mkdtemp(prefix="uv-cache-")
    kernel = Kernel(env=dict(os.environ, UV_CACHE_DIR=cache), cwd=str(folder))
    assert kernel.execute("%load_ext skyward").ok
    cold = timed_up(kernel)
    kernel.execute("%skyward down", timeout=120)
    warm = timed_up(kernel)
    kernel.execute("import helpers")
    kernel.execute("%%skyward run\nimport helpers")
    measure = (
        "from skyward.session import local_code as _lc\n"
        "from skyward.jupyter import extension as _ex\n"
        "import asyncio, time\n"
        "_nodes = await _ex.session().select(None)\n"
        "_t = time.perf_counter()\n"
        "for _ in range(20):\n"
        "    await _ex.session().before_cell(_nodes)\n"
        "print(f'{(time.perf_counter() - _t) / 20 * 1000:.2f} ms, '\n"
        "      f'{_lc.CODE.last_bytes} bytes, {_lc.CODE.last_files} file(s)')"
    )
    unchanged = kernel.execute(measure).text().strip()
    kernel.execute("%skyward down", timeout=120)
    bare = timed_up(kernel, "--no-sync-packages")
    kernel.execute("%skyward down", timeout=120)
    kernel.shutdown()
    print(f"up with package sync, empty uv cache:  {cold:6.1f} s")
    print(f"up with package sync, second time:     {warm:6.1f} s  ({cold / warm:.1f}x faster)")
    print(f"up --no-sync-packages:                 {bare:6.1f} s")
    print(f"local-module sync, nothing changed:    {unchanged} (per cell)")


if __name__ == "__main__":
    main()
