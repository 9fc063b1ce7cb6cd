"""A tutorial-style notebook (numpy and matplotlib, ~20 cells) run cell by cell locally
and under ``%%skyward run`` on one ``container`` node, in one kernel: the time of each
cell to idle, and remote over local.

    .venv/bin/python benchmarks/remote_notebook.py [--rounds 3]

Prints one row per cell (median of the rounds) and the totals. Not a test: the
machine is shared and noisy; compare figures of one run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.integration.kernel import Kernel  # noqa: E402

CELLS = [
    "import numpy as np\nimport matplotlib.pyplot as plt",
    "rng = np.random.default_rng(0)\nx = np.linspace(0, 10, 200)\nx[:5]",
    "y = np.sin(x) + rng.normal(0, 0.1, x.size)\ny.mean(), y.std()",
    "fig, ax = plt.subplots()\nax.plot(x, y, '.')\nax.set_title('noisy sine');",
    "coef = np.polyfit(x, y, 7)\ncoef",
    "fit = np.polyval(coef, x)\nresidual = y - fit\n"
    "print(f'rms {np.sqrt((residual**2).mean()):.4f}')",
    "plt.plot(x, fit)\nplt.plot(x, y, ',');",
    "a = rng.normal(size=(300, 300))\nb = a @ a.T\nb.shape",
    "w, v = np.linalg.eigh(b)\nw[-3:]",
    "plt.hist(w, bins=40);",
    "def moving_average(v, n):\n    return np.convolve(v, np.ones(n) / n, mode='valid')",
    "smooth = moving_average(y, 9)\nlen(smooth)",
    "fig, axes = plt.subplots(1, 2, figsize=(8, 3))\naxes[0].plot(smooth)\naxes[1].plot(residual);",
    "table = {k: float(v) for k, v in zip('abcdef', coef)}\ntable",
    "list(range(25))",
    "for i in range(5):\n    print('step', i)",
    "%timeit -n3 -r3 np.fft.fft(y)",
    "img = rng.random((64, 64))\nplt.imshow(img)\nplt.colorbar();",
    "np.set_printoptions(precision=3)\nimg[:3, :3]",
    "import warnings\nwarnings.warn('a deprecation a tutorial would show')",
    "total = float(np.sum(img))\ntotal",
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    kernel = Kernel()
    try:
        assert kernel.execute("%load_ext skyward").ok
        up = kernel.execute("%skyward up --provider container --pip numpy matplotlib", timeout=600)
        assert up.ok, up.text()
        local: dict[int, list[float]] = {i: [] for i in range(len(CELLS))}
        remote: dict[int, list[float]] = {i: [] for i in range(len(CELLS))}
        for _ in range(args.rounds):
            for i, cell in enumerate(CELLS):
                for code, into in ((cell, local), ("%%skyward run\n" + cell, remote)):
                    started = time.perf_counter()
                    result = kernel.execute(code, timeout=300)
                    into[i].append(time.perf_counter() - started)
                    assert result.ok, (code, result.text())
        print(f"{'cell':<48} {'local ms':>9} {'remote ms':>10} {'over':>8}")
        for i, cell in enumerate(CELLS):
            lo, re_ = statistics.median(local[i]) * 1e3, statistics.median(remote[i]) * 1e3
            print(f"{cell.splitlines()[0][:48]:<48} {lo:9.1f} {re_:10.1f} {re_ - lo:+8.1f}")
        lo_total = sum(statistics.median(v) for v in local.values()) * 1e3
        re_total = sum(statistics.median(v) for v in remote.values()) * 1e3
        overs = [statistics.median(remote[i]) - statistics.median(local[i]) for i in local]
        print(
            f"\n{len(CELLS)} cells, median of {args.rounds} rounds: local {lo_total:.0f} ms, "
            f"remote {re_total:.0f} ms ({re_total / lo_total:.2f}x); median per-cell overhead "
            f"{statistics.median(overs) * 1e3:+.1f} ms"
        )
        kernel.execute("%skyward down", timeout=60)
    finally:
        kernel.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
