"""``%skyward put`` of a fresh file to 1 and 4 nodes (container provider), round by round.

Each round writes new random bytes (so nothing is cached on the nodes) and puts the file;
prints each round's time to idle and the median, and with several ``--nodes`` each median
against the 1-node one.

    .venv/bin/python benchmarks/put.py [--rounds 5] [--mb 100] [--nodes 1 4]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile

from remote_cells import Kernel


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--mb", type=int, default=100)
    parser.add_argument("--nodes", type=int, nargs="+", default=[1, 4])
    args = parser.parse_args()
    k = Kernel()
    medians: dict[int, float] = {}
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "data.bin")
        try:
            k.run("%load_ext skyward")
            for n in args.nodes:
                print(f"\n## {n} node(s), {args.mb} MB")
                k.run(f"%skyward up --provider container --nodes {n}", timeout=900)
                times = []
                for i in range(args.rounds):
                    with open(path, "wb") as handle:
                        handle.write(os.urandom(args.mb * 1_000_000))
                    times.append(k.run(f"%skyward put {path}", timeout=600)[0])
                    print(f"round {i}: {times[-1]:6.3f} s")
                medians[n] = statistics.median(times)
                line = f"median: {medians[n]:.3f} s"
                if 1 in medians and n != 1:
                    line += f", {medians[n] / medians[1]:.2f}x the 1-node put"
                print(line)
                k.run("%skyward down", timeout=120)
        finally:
            k.close()


if __name__ == "__main__":
    main()
