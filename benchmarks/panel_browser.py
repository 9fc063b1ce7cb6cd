"""Benchmark: the live panel under a flood, in JupyterLab and headless Chromium.

A synthetic event stream on the kernel's bus: 16 nodes each printing 100,000 lines with a
tqdm-style bar redrawn at full speed between them (every 10th line an overwrite), plus 4
metrics per node at 10 Hz. One view of the panel is open with node 0's log shown.

Measured: the kernel-side sync rate and bytes per second sent to the browser (the panel's
own counters), the kernel's RSS growth, and the page's longest frame (``longtask``
entries of the Performance API and the longest gap between two animation frames).

    .venv/bin/python benchmarks/panel_browser.py [--lines 100000] [--nodes 16]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.browser.test_panel_browser import CHROMIUM_FLAGS, _chromium, start_lab  # noqa: E402

SETUP = """
import asyncio, json, os, time
from skyward.core.bus import EventBus
from skyward.events import Log, Metric, NodeInstance
from skyward.jupyter.panel.widget import Panel
from skyward.model import Instance

def rss_mb():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

bus = EventBus()
panel = Panel(bus, asyncio.get_running_loop())
NODES = [NodeInstance(Instance(f"i-{n:02d}", ip="10.0.0.%d" % n), n, "container", "u", "/k")
         for n in range(@NODES@)]
panel.widget
"""

FLOOD = """
async def flood(lines=@LINES@):
    rss0 = rss_mb()
    syncs0, bytes0 = panel.stats["syncs"], panel.stats["bytes"]
    start = time.monotonic()
    next_metric = start
    names = ["cpu_percent", "memory_gb", "loss", "throughput"]
    publish = bus.publish
    for i in range(lines):
        for ni in NODES:
            if i % 10 == 9:
                pct = i * 100 // lines
                publish(Log(ni, f"{pct:3d}%|{'#' * (pct // 10):<10}| {i}/{lines} [00:01<00:02]",
                            "stderr", True))
            else:
                text = f"node {ni.node} step {i}: loss=0.{i % 997:03d} \\x1b[32mok\\x1b[0m"
                publish(Log(ni, text))
        if i % 50 == 0:
            now = time.monotonic()
            if now >= next_metric:
                stamp = time.time()
                for ni in NODES:
                    for k, name in enumerate(names):
                        publish(Metric(ni, name, (i % 100) + k * 10.0, stamp))
                next_metric = now + 0.1
            await asyncio.sleep(0)
    elapsed = time.monotonic() - start
    await asyncio.sleep(0.2)
    return {
        "events": lines * len(NODES),
        "seconds": round(elapsed, 2),
        "syncs_per_s": round((panel.stats["syncs"] - syncs0) / elapsed, 1),
        "bytes_per_s": round((panel.stats["bytes"] - bytes0) / elapsed),
        "rss_growth_mb": round(rss_mb() - rss0, 1),
    }

result = await flood()
print("RESULT " + json.dumps(result))
"""

PROBE = """() => {
  window.__sw = { longtasks: [], maxGap: 0 };
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) window.__sw.longtasks.push(e.duration);
  }).observe({ type: "longtask", buffered: false });
  let last = performance.now();
  const tick = (t) => { window.__sw.maxGap = Math.max(window.__sw.maxGap, t - last); last = t;
                        requestAnimationFrame(tick); };
  requestAnimationFrame(tick);
}"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lines", type=int, default=100_000, help="lines per node")
    parser.add_argument("--nodes", type=int, default=16)
    parser.add_argument("--closed", action="store_true", help="keep node 0's log closed")
    parser.add_argument("--profile", help="write a CPU profile of the page to this file")
    args = parser.parse_args()
    chromium = _chromium()
    if chromium is None:
        sys.exit("chromium is not installed (scripts/setup installs it)")
    from playwright.sync_api import sync_playwright

    folder = Path(tempfile.mkdtemp(prefix="skyward-bench-"))
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)"}
    nb.cells = [
        nbformat.v4.new_code_cell(SETUP.replace("@NODES@", str(args.nodes))),
        nbformat.v4.new_code_cell(FLOOD.replace("@LINES@", str(args.lines))),
    ]
    nbformat.write(nb, folder / "bench.ipynb")
    server = start_lab(folder)
    url = next(server)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"{url}/lab/tree/bench.ipynb?reset")
            page.wait_for_function("() => window.jupyterapp !== undefined", timeout=60_000)
            accept = page.locator(".jp-Dialog button.jp-mod-accept")
            try:
                accept.first.wait_for(timeout=8_000)
                accept.first.click()
            except Exception:
                pass
            page.locator('.jp-Notebook-ExecutionIndicator[data-status="idle"]').wait_for(
                timeout=60_000
            )
            page.locator(".jp-Notebook .jp-Cell").nth(0).click()
            page.keyboard.press("Shift+Enter")
            panel = page.locator(".sw-panel").first
            panel.wait_for(timeout=60_000)
            page.evaluate(PROBE)
            cdp = None
            if args.profile:
                cdp = page.context.new_cdp_session(page)
                cdp.send("Profiler.enable")
                cdp.send("Profiler.start")
            page.locator(".jp-Notebook .jp-Cell").nth(1).click()
            page.keyboard.press("Shift+Enter")
            panel.locator('tr.sw-node[data-node="0"]').wait_for(timeout=60_000)
            if not args.closed:
                panel.locator('tr.sw-node[data-node="0"]').click()
            out = page.locator(".jp-OutputArea-output", has_text="RESULT ")
            out.wait_for(timeout=600_000)
            time.sleep(1.0)
            if cdp is not None:
                profile = cdp.send("Profiler.stop")["profile"]
                Path(args.profile).write_text(json.dumps(profile))
            result = json.loads(out.inner_text().split("RESULT ", 1)[1].strip())
            perf = page.evaluate("() => window.__sw")
            result["longest_long_task_ms"] = round(max(perf["longtasks"], default=0.0), 1)
            result["long_tasks"] = len(perf["longtasks"])
            result["long_task_list_ms"] = [round(x) for x in perf["longtasks"]]
            result["longest_frame_gap_ms"] = round(perf["maxGap"], 1)
            shots = ROOT / "test-artifacts" / "benchmarks"
            shots.mkdir(parents=True, exist_ok=True)
            panel.scroll_into_view_if_needed()
            page.screenshot(path=str(shots / "panel-flood.png"))
            browser.close()
    finally:
        server.close()
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
