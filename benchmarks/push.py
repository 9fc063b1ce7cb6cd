"""The first push of a large numpy array: ``%%skyward run`` beside ipyparallel's push.

Each round makes a fresh array (new bytes, so a new key: nothing is cached on the
nodes), pushes it with ``dview.push`` and then sends a cell that reads it, alternating
the two so both see the same machine. Prints each round and the medians, and the ratio
of ours to ``%%px``'s; with several ``--nodes``, also each figure against our 1-node one.

    .venv/bin/python benchmarks/push.py [--rounds 5] [--mb 100] [--nodes 1 4] [--alone]

``--alone`` leaves ipyparallel out: no engines share the machine's cores with the nodes.
"""

from __future__ import annotations

import argparse
import statistics

from remote_cells import Kernel


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--mb", type=int, default=100)
    parser.add_argument("--nodes", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--alone", action="store_true", help="without ipyparallel")
    args = parser.parse_args()
    k = Kernel()
    ours: dict[int, float] = {}
    try:
        k.run("%load_ext skyward\nimport ipyparallel as ipp, numpy as np")
        for n in args.nodes:
            print(f"\n## {n} node(s) / engine(s), {args.mb} MB")
            k.run(f"%skyward up --provider container --nodes {n} --pip numpy", timeout=900)
            if not args.alone:
                k.run(
                    f"cluster = ipp.Cluster(n={n}, log_level=40)\n"
                    "rc = await cluster.start_and_connect(activate=True)\n"
                    "dview = rc[:]\ndview.block = True\n_ = dview.execute('import numpy')",
                    timeout=300,
                )
            k.run("%%skyward run\nimport numpy")
            px, sky = [], []
            for i in range(args.rounds):
                k.run(f"arr = np.random.rand({args.mb} * 1000 * 1000 // 8)")
                if not args.alone:
                    px.append(k.run("dview.push({'arr': arr})")[0])
                sky.append(k.run("%%skyward run\narr.nbytes", timeout=600)[0])
                beside = "" if args.alone else f"%%px {px[-1]:6.3f} s   "
                print(f"round {i}: {beside}skyward run {sky[-1]:6.3f} s")
            msky = statistics.median(sky)
            ours[n] = msky
            line = f"median: skyward run {msky:.3f} s"
            if px:
                mpx = statistics.median(px)
                line = f"median: %%px {mpx:.3f} s, skyward run {msky:.3f} s: {msky / mpx:.2f}x %%px"
            if 1 in ours and n != 1:
                line += f", {msky / ours[1]:.2f}x our 1-node"
            print(line)
            stop = "" if args.alone else "await cluster.stop_cluster()\n"
            k.run(f"del arr\n{stop}%skyward down", timeout=120)
    finally:
        k.close()


if __name__ == "__main__":
    main()
