"""Dispatch latency of ``%%skyward run`` and time to ``ClusterReady``, in one real kernel.

Prints, for 1 and 4 nodes on the container provider: median and p90 wall time from
sending ``%%skyward run\\npass`` to the kernel going idle, beside the same kernel's bare
``pass`` cell measured in the same run; and the time from ``%skyward up --nodes N`` to
the cluster being ready for N = 1, 4, 8.

    .venv/bin/python benchmarks/dispatch.py [--rounds 200] [--nodes 1 4] [--up 1 4 8]

``--up`` with no number leaves out the time to ``ClusterReady``.
"""

from __future__ import annotations

import argparse
import re
import statistics
import time

from jupyter_client.manager import KernelManager


class Kernel:
    def __init__(self) -> None:
        self.km = KernelManager(kernel_name="python3")
        self.km.start_kernel()
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)

    def run(self, code: str, timeout: float = 300) -> tuple[float, str]:
        """Seconds from send to idle, and the text the cell showed."""
        start = time.perf_counter()
        msg_id = self.kc.execute(code)
        texts = []
        while True:
            msg = self.kc.get_iopub_msg(timeout=timeout)
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind = msg["msg_type"]
            if kind == "status" and msg["content"]["execution_state"] == "idle":
                elapsed = time.perf_counter() - start
                break
            if kind == "stream":
                texts.append(msg["content"]["text"])
            elif kind == "error":
                texts.append("\n".join(msg["content"]["traceback"]))
            elif kind in ("display_data", "update_display_data", "execute_result"):
                texts.append(msg["content"]["data"].get("text/plain", ""))
        self.kc.get_shell_msg(timeout=timeout)
        return elapsed, "\n".join(texts)

    def close(self) -> None:
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=False)


def stats(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered) * 1000, ordered[int(0.9 * (len(ordered) - 1))] * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--nodes", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--up", type=int, nargs="*", default=[1, 4, 8])
    args = parser.parse_args()
    k = Kernel()
    try:
        k.run("%load_ext skyward")
        print(f"# dispatch latency, {args.rounds} rounds, send → idle (ms)")
        print(f"{'cell':<28}{'median':>9}{'p90':>9}{'over bare':>11}")
        for nodes in args.nodes:
            _, text = k.run(f"%skyward up --provider container --nodes {nodes}")
            assert "ready" in text, text
            for _ in range(20):
                k.run("pass")
                k.run("%%skyward run\npass")
            bare, remote = [], []
            for _ in range(args.rounds):  # interleaved, so both see the same noise
                bare.append(k.run("pass")[0])
                remote.append(k.run("%%skyward run\npass")[0])
            b_med, b_p90 = stats(bare)
            r_med, r_p90 = stats(remote)
            print(f"{'pass (bare)':<28}{b_med:>9.2f}{b_p90:>9.2f}{'':>11}")
            label = f"%%skyward run, {nodes} node(s)"
            print(f"{label:<28}{r_med:>9.2f}{r_p90:>9.2f}{r_med - b_med:>+11.2f}")
            k.run("%skyward down")
        if args.up:
            print("\n# %skyward up --nodes N → cluster ready (s), from the summary line")
        for nodes in args.up:
            wall, text = k.run(f"%skyward up --provider container --nodes {nodes}")
            found = re.search(r"in ([\d.]+) s", text)
            print(f"nodes={nodes}: {found.group(1) if found else '?'} s (cell {wall:.2f} s)")
            k.run("%skyward down")
    finally:
        k.close()


if __name__ == "__main__":
    main()
