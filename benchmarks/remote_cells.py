"""``%%skyward run`` beside ipyparallel's ``%%px``, in one kernel, on this machine.

For 1 and 4 nodes (container provider) and engines (ipyparallel, local): the latency of
an empty cell, a cell printing 100,000 lines per node, a tqdm loop of 20,000 iterations,
and sending a 100 MB numpy array (then the same cell again, the array unchanged). Both
run in the same kernel, interleaved where it matters, so they see the same machine.

    .venv/bin/python benchmarks/remote_cells.py [--rounds 50] [--nodes 1 4]
"""

from __future__ import annotations

import argparse
import re
import statistics
import time

from jupyter_client.manager import KernelManager

FRONTEND = ("stream", "display_data", "update_display_data", "execute_result", "error")


class Kernel:
    def __init__(self) -> None:
        self.km = KernelManager(kernel_name="python3")
        self.km.start_kernel()
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)

    def run(self, code: str, timeout: float = 600) -> tuple[float, int, str]:
        """Seconds from send to idle, messages to the frontend, and the text shown."""
        start = time.perf_counter()
        msg_id = self.kc.execute(code)
        count, texts = 0, {}
        while True:
            msg = self.kc.get_iopub_msg(timeout=timeout)
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind = msg["msg_type"]
            if kind == "status" and msg["content"]["execution_state"] == "idle":
                elapsed = time.perf_counter() - start
                break
            if kind in FRONTEND:
                count += 1
                content = msg["content"]
                if kind == "stream":
                    texts[len(texts)] = content["text"]
                elif kind == "error":
                    texts[len(texts)] = "\n".join(content["traceback"])
                else:
                    key = content.get("transient", {}).get("display_id") or len(texts)
                    texts[key] = content["data"].get("text/plain", "")
        reply = self.kc.get_shell_msg(timeout=timeout)
        text = "\n".join(texts.values())
        if reply["content"]["status"] != "ok":
            raise RuntimeError(f"cell failed: {code[:60]!r}\n{text[-2000:]}")
        return elapsed, count, text

    def close(self) -> None:
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=False)


def ms(samples: list[float]) -> str:
    ordered = sorted(samples)
    p90 = ordered[int(0.9 * (len(ordered) - 1))]
    return f"median {statistics.median(ordered) * 1000:7.2f} ms, p90 {p90 * 1000:7.2f} ms"


LINES = "for i in range(100000):\n    print(i)\n"
TQDM = (
    "import time\nfrom tqdm import tqdm\nt0 = time.perf_counter()\n"
    "for _ in tqdm(range(20000)):\n    time.sleep(0.0001)\n"
    "loop_s = time.perf_counter() - t0\nprint(f'loop {loop_s:.3f} s')\n"
)


def loop_seconds(text: str) -> float:
    found = [float(x) for x in re.findall(r"loop ([\d.]+) s", text)]
    return max(found) if found else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--nodes", type=int, nargs="+", default=[1, 4])
    args = parser.parse_args()
    k = Kernel()
    try:
        k.run("%load_ext skyward\nimport ipyparallel as ipp, numpy as np")
        for n in args.nodes:
            print(f"\n## {n} node(s) / engine(s)")
            k.run(f"%skyward up --provider container --nodes {n} --pip tqdm numpy", timeout=900)
            k.run(
                f"cluster = ipp.Cluster(n={n}, log_level=40)\n"
                "rc = await cluster.start_and_connect(activate=True)\n"
                "dview = rc[:]\ndview.block = True\n_ = dview.execute('import numpy')",
                timeout=300,
            )
            k.run("%%skyward run\nimport numpy")  # as the engines did: not part of a push
            px, sky = [], []
            for _ in range(10):
                k.run("%%px\npass")
                k.run("%%skyward run\npass")
            for _ in range(args.rounds):
                px.append(k.run("%%px\npass")[0])
                sky.append(k.run("%%skyward run\npass")[0])
            print(f"empty cell      %%px          {ms(px)}")
            print(f"empty cell      skyward run   {ms(sky)}")
            for name, magic in (("%%px", "%%px"), ("skyward run", "%%skyward run")):
                wall, count, _ = k.run(f"{magic}\n{LINES}")
                rate = n * 100_000 / wall
                print(
                    f"100k lines/node {name:<13} {wall:6.2f} s to idle, {rate:>10,.0f} lines/s, "
                    f"{count} frontend messages"
                )
            for name, magic in (("%%px", "%%px"), ("skyward run", "%%skyward run")):
                wall, count, text = k.run(f"{magic}\n{TQDM}")
                loop = loop_seconds(text)
                print(
                    f"tqdm 20k        {name:<13} {wall:6.2f} s to idle (loop {loop:.2f} s on "
                    f"the node, ratio {wall / loop:.2f}), {count} frontend messages, "
                    f"{count / wall:.1f}/s"
                )
            k.run("arr = np.random.rand(100 * 1000 * 1000 // 8)")
            wall, _, _ = k.run("_t = __import__('time').perf_counter(); dview.push({'arr': arr})")
            print(f"push 100 MB     %%px          {wall:6.2f} s (dview.push, block=True)")
            wall, _, _ = k.run("%%skyward run\narr.nbytes", timeout=600)
            print(f"push 100 MB     skyward run   {wall:6.2f} s (pushed with the cell)")
            again, _, _ = k.run("%%skyward run\narr.nbytes", timeout=600)
            print(f"push unchanged  skyward run   {again:6.2f} s ({again / wall:.1%} of the first)")
            k.run("del arr\nawait cluster.stop_cluster()\n%skyward down", timeout=120)
    finally:
        k.close()


if __name__ == "__main__":
    main()
