"""Benchmark: the live panel under a flood, in JupyterLab and headless Chromium.

A synthetic event stream on the kernel's bus: 16 nodes each printing 100,000 lines with a
tqdm-style bar redrawn at full speed between them (every 10th line an overwrite), plus 4
metrics per node at 10 Hz. The lines arrive as the agent's frames bring them: one
``LogLines`` batch per node every 50 lines (the panel folds batches, not ``Log`` events).

Measured, once with node 0's log pane open and once with every pane closed (a fresh
JupyterLab and kernel each): the kernel-side sync rate and bytes per second sent to the
browser (the panel's own counters), the kernel's RSS growth, and the page's longest frame:
``longtask`` entries of the Performance API and the longest gap between two animation
frames, over all tasks and over the flood only (leaving out the tasks that handled the
benchmark's own Shift+Enter and click: JupyterLab starting a cell, focusing a cell).
``--trace`` records a Chromium performance trace of each case and prints where the main
thread's long tasks spent their time (self time by trace event and entry point; a forced
layout's JS stack is in the trace). To run the page as of another tree, run this file
with that tree's Python (its kernel imports that tree's ``skyward`` and bundle).

    .venv/bin/python benchmarks/panel_browser.py [--lines 100000] [--nodes 16]
        [--case open|closed|both] [--tag NAME] [--trace PREFIX] [--profile PREFIX]
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
from skyward.core.outputs import LogLines
from skyward.events import Metric, NodeInstance
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
    batches = [[] for _ in NODES]
    for i in range(lines):
        for ni, batch in zip(NODES, batches):
            if i % 10 == 9:
                pct = i * 100 // lines
                bar = f"{pct:3d}%|{'#' * (pct // 10):<10}| {i}/{lines} [00:01<00:02]"
                batch.append(("stderr", bar, True))
            else:
                text = f"node {ni.node} step {i}: loss=0.{i % 997:03d} \\x1b[32mok\\x1b[0m"
                batch.append(("stdout", text, False))
        if i % 50 == 49 or i == lines - 1:
            for ni, batch in zip(NODES, batches):
                publish(LogLines(ni, None, tuple(batch)))
                batch.clear()
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
  const sw = (window.__sw = { longtasks: [], gaps: [], inputs: [], maxGap: 0 });
  for (const type of @INPUTS@) {
    window.addEventListener(type, () => sw.inputs.push(performance.now()), true);
  }
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) sw.longtasks.push([e.startTime, e.duration]);
  }).observe({ type: "longtask", buffered: false });
  let last = performance.now();
  const tick = (t) => {
    if (t - last > 50) sw.gaps.push([last, t - last]);
    sw.maxGap = Math.max(sw.maxGap, t - last);
    last = t;
    requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);
}"""


def _handled_input(span: list[float], inputs: list[float]) -> bool:
    """Whether one of the benchmark's own key presses and clicks was handled during the
    ``[start, duration]`` span (JupyterLab running a cell on Shift+Enter, focusing a cell
    on a click: not the panel's work)."""
    start, duration = span
    return any(start <= t <= start + duration for t in inputs)


def _without_inputs(spans: list[list[float]], inputs: list[float]) -> list[float]:
    """The durations of the spans that handled none of the benchmark's inputs."""
    return [span[1] for span in spans if not _handled_input(span, inputs)]


TRACE_CATEGORIES = [
    "toplevel",
    "devtools.timeline",
    "disabled-by-default-devtools.timeline",
    "v8",
    "v8.execute",
    "blink.user_timing",
    "disabled-by-default-devtools.timeline.stack",
]
WAIT_MS = 180_000
"""How long JupyterLab, the kernel and the panel may take to appear (a shared machine
under load needed more than a minute)."""
LONG_TASK_US = 50_000
FRAME_US = 16_667  # one frame at 60 Hz
INPUT_EVENTS = ("keydown", "keyup", "mousedown", "mouseup", "click")
WRAPPERS = {"RunTask", "ThreadControllerImpl::RunTask", "ThreadPool_RunTask"}
"""Trace events that only wrap a task: the entry point is the first event inside them."""


def _label(event: dict) -> str:
    """A trace event's name, with the detail that says what ran (the JS function, the DOM
    event's type)."""
    name = event["name"]
    data = event.get("args", {}).get("data", {}) or {}
    if name == "FunctionCall":
        where = data.get("url", "").rsplit("/", 1)[-1]
        return f"JS {data.get('functionName') or '(anonymous)'} {where}".rstrip()
    if name == "EventDispatch":
        return f"EventDispatch {data.get('type', '')}"
    if name == "TimerFire":
        return "TimerFire"
    if "GC" in name or name.startswith("V8.GC"):
        return "GC"
    if name in ("Layout", "UpdateLayoutTree"):
        args = event.get("args", {})
        stack = (args.get("beginData") or {}).get("stackTrace") or data.get("stackTrace")
        if stack:  # forced by JS: name the function that asked
            return f"{name} forced by {stack[0].get('functionName') or '(anonymous)'}"
    return name


def _self_times(inside: list[dict]) -> tuple[dict[str, float], dict[str, float], str]:
    """Self time by label (and the entry point each ran under) of the events of one task,
    sorted by start; the time by entry point; the first entry point."""
    top: dict[str, float] = {}
    entries: dict[str, float] = {}
    first_entry = ""
    stack: list[list] = []  # [event, time of its children, entry point]

    def close(frame: list) -> None:
        event, children, entry = frame
        label = _label(event)
        key = f"{label} [in {entry}]" if entry != label else label
        top[key] = top.get(key, 0) + max(0.0, event["dur"] - children)
        if stack:
            stack[-1][1] += event["dur"]

    for event in inside:
        while stack and event["ts"] >= stack[-1][0]["ts"] + stack[-1][0]["dur"]:
            close(stack.pop())
        entry = next((f[2] for f in stack if f[2] not in WRAPPERS), "")
        if not entry and event["name"] not in WRAPPERS:
            entry = _label(event)
            first_entry = first_entry or entry
            entries[entry] = entries.get(entry, 0) + event["dur"]
        stack.append([event, 0.0, entry or event["name"]])
    while stack:
        close(stack.pop())
    return top, entries, first_entry


def long_task_attribution(events: list[dict], threshold_us: int = LONG_TASK_US) -> dict:
    """Where the renderer main thread's long tasks spent their time.

    The main thread is the busiest ``CrRendererMain``; a long task is a top-level
    ``RunTask`` of ``threshold_us`` or more (wall time; its CPU time is counted apart).
    Within each, every complete event's self time (its duration less its children's) is
    summed by label and by the entry point it ran under (the task's first named child: a
    rAF callback, a WebSocket message, a timer).
    """
    mains = {
        (e["pid"], e["tid"])
        for e in events
        if e.get("ph") == "M"
        and e.get("name") == "thread_name"
        and e.get("args", {}).get("name") == "CrRendererMain"
    }
    busy: dict[tuple[int, int], float] = {}
    for e in events:
        if e.get("ph") == "X" and e["name"] == "RunTask" and (e["pid"], e["tid"]) in mains:
            busy[(e["pid"], e["tid"])] = busy.get((e["pid"], e["tid"]), 0) + e.get("dur", 0)
    if not busy:
        return {"long_tasks": 0}
    main = max(busy, key=busy.__getitem__)
    mine = sorted(
        (e for e in events if e.get("ph") == "X" and (e["pid"], e["tid"]) == main and "dur" in e),
        key=lambda e: (e["ts"], -e["dur"]),
    )
    every = [e for e in mine if e["name"] == "RunTask"]
    inputs = [
        e["ts"]
        for e in mine
        if e["name"] == "EventDispatch"
        and (e.get("args", {}).get("data") or {}).get("type") in INPUT_EVENTS
    ]
    flood = [e for e in every if not _handled_input([e["ts"], e["dur"]], inputs)]
    cpu = sorted((e.get("tdur", e["dur"]) for e in flood), reverse=True)
    tasks = [e for e in every if e["dur"] >= threshold_us]
    by_label: dict[str, float] = {}
    by_entry: dict[str, float] = {}
    per_task = []
    i = 0
    for task in tasks:
        end = task["ts"] + task["dur"]
        while i < len(mine) and mine[i]["ts"] < task["ts"]:
            i += 1
        inside = []
        while i < len(mine) and mine[i]["ts"] < end:
            if mine[i] is not task:
                inside.append(mine[i])
            i += 1
        top, entries, first_entry = _self_times(inside)
        for key, us in top.items():
            by_label[key] = by_label.get(key, 0) + us
        for key, us in entries.items():
            by_entry[key] = by_entry.get(key, 0) + us
        per_task.append(
            {
                "ms": round(task["dur"] / 1000, 1),
                "entry": first_entry,
                "top": {
                    k: round(v / 1000, 1) for k, v in sorted(top.items(), key=lambda kv: -kv[1])[:4]
                },
            }
        )
    total = sum(t["dur"] for t in tasks) or 1

    def shares(d: dict[str, float], n: int) -> list[str]:
        ranked = sorted(d.items(), key=lambda kv: -kv[1])[:n]
        return [f"{v / 1000:8.1f} ms {100 * v / total:5.1f}%  {k}" for k, v in ranked]

    return {
        "long_tasks": len(tasks),
        "long_task_ms": round(total / 1000, 1),
        # The thread's own time in the flood's tasks (the benchmark's inputs left out): on
        # a busy machine a task's wall time also holds the time other processes ran.
        "flood_longest_task_cpu_ms": round(cpu[0] / 1000, 1) if cpu else 0.0,
        "flood_tasks_over_threshold_cpu": sum(1 for c in cpu if c >= threshold_us),
        "flood_tasks_over_a_frame_cpu": sum(1 for c in cpu if c >= FRAME_US),
        "main_thread_cpu_ms": round(sum(e.get("tdur", 0) for e in every) / 1000),
        "self_time": shares(by_label, 20),
        "entry_points": shares(by_entry, 8),
        "longest": sorted(per_task, key=lambda t: -t["ms"])[:5],
    }


def _run_first_cell(page, panel) -> None:
    """Run the set-up cell and wait for its panel. On a loaded machine a Shift+Enter sent
    before the notebook took focus was lost: press again while the cell has not run."""
    cell = page.locator(".jp-Notebook .jp-Cell").nth(0)
    deadline = time.monotonic() + WAIT_MS / 1000
    while True:
        prompt = cell.locator(".jp-InputPrompt").inner_text().strip()
        if prompt in ("[ ]:", ""):
            cell.click()
            page.keyboard.press("Shift+Enter")
        try:
            panel.wait_for(timeout=30_000)
            return
        except Exception:
            if time.monotonic() > deadline:
                raise


def run_case(chromium: str, args: argparse.Namespace, case: str) -> dict:
    """One flood in a fresh JupyterLab and kernel; node 0's pane open when ``case`` is
    "open"."""
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
    trace = Path(f"{args.trace}-{case}.json") if args.trace else None
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"{url}/lab/tree/bench.ipynb?reset")
            page.wait_for_function("() => window.jupyterapp !== undefined", timeout=WAIT_MS)
            accept = page.locator(".jp-Dialog button.jp-mod-accept")
            try:
                accept.first.wait_for(timeout=8_000)
                accept.first.click()
            except Exception:
                pass
            page.locator('.jp-Notebook-ExecutionIndicator[data-status="idle"]').wait_for(
                timeout=WAIT_MS
            )
            panel = page.locator(".sw-panel").first
            _run_first_cell(page, panel)
            page.evaluate(PROBE.replace("@INPUTS@", json.dumps(INPUT_EVENTS)))
            cdp = None
            if args.profile:
                cdp = page.context.new_cdp_session(page)
                cdp.send("Profiler.enable")
                cdp.send("Profiler.start")
            if trace is not None:
                browser.start_tracing(page=page, categories=TRACE_CATEGORIES)
            page.locator(".jp-Notebook .jp-Cell").nth(1).click()
            page.keyboard.press("Shift+Enter")
            panel.locator('tr.sw-node[data-node="0"]').wait_for(timeout=WAIT_MS)
            if case == "open":
                panel.locator('tr.sw-node[data-node="0"]').click()
            out = page.locator(".jp-OutputArea-output", has_text="RESULT ")
            out.wait_for(timeout=600_000)
            time.sleep(1.0)
            if cdp is not None:
                profile = cdp.send("Profiler.stop")["profile"]
                Path(f"{args.profile}-{case}.cpuprofile").write_text(json.dumps(profile))
            if trace is not None:
                trace.write_bytes(browser.stop_tracing())
            result = {"case": case}
            result.update(json.loads(out.inner_text().split("RESULT ", 1)[1].strip()))
            perf = page.evaluate("() => window.__sw")
            tasks = [d for _, d in perf["longtasks"]]
            flood = _without_inputs(perf["longtasks"], perf["inputs"])
            result["longest_long_task_ms"] = round(max(tasks, default=0.0), 1)
            result["long_tasks"] = len(tasks)
            inputs = perf["inputs"]
            result["long_task_list_ms"] = [
                f"{d:.0f} at {start:.0f}"
                + (" (input)" if _handled_input([start, d], inputs) else "")
                for start, d in perf["longtasks"]
            ]
            result["inputs_at_ms"] = [round(t) for t in inputs]
            result["longest_frame_gap_ms"] = round(perf["maxGap"], 1)
            result["flood_longest_task_ms"] = round(max(flood, default=0.0), 1)
            result["flood_long_tasks"] = len(flood)
            gaps = _without_inputs(perf["gaps"], perf["inputs"])
            result["flood_longest_gap_ms"] = round(max(gaps, default=0.0), 1)
            shots = ROOT / "test-artifacts" / "benchmarks"
            shots.mkdir(parents=True, exist_ok=True)
            panel.scroll_into_view_if_needed()
            page.screenshot(path=str(shots / f"panel-flood-{args.tag}{case}.png"))
            browser.close()
    finally:
        server.close()
    if trace is not None:
        data = json.loads(trace.read_text())
        events = data["traceEvents"] if isinstance(data, dict) else data
        result["trace"] = long_task_attribution(events)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lines", type=int, default=100_000, help="lines per node")
    parser.add_argument("--nodes", type=int, default=16)
    parser.add_argument("--case", choices=["open", "closed", "both"], default="both")
    parser.add_argument("--tag", default="", help="prefix of the screenshots' names")
    parser.add_argument("--trace", help="write a Chromium trace of each case to PREFIX-CASE.json")
    parser.add_argument(
        "--profile", help="write a CPU profile of each case to PREFIX-CASE.cpuprofile"
    )
    args = parser.parse_args()
    chromium = _chromium()
    if chromium is None:
        sys.exit("chromium is not installed (scripts/setup installs it)")
    cases = ["open", "closed"] if args.case == "both" else [args.case]
    results = [run_case(chromium, args, case) for case in cases]
    print(json.dumps(results, indent=1))
    print(TABLE_HEAD)
    for r in results:
        print(
            f"{r['case']:<8}{r['longest_long_task_ms']:>9}{r['long_tasks']:>7}"
            f"{r['flood_longest_task_ms']:>9}{r['flood_long_tasks']:>7}"
            f"{r['longest_frame_gap_ms']:>9}{r['flood_longest_gap_ms']:>9}"
            f"{r['syncs_per_s']:>9}{r['bytes_per_s']:>11}{r['seconds']:>9}"
        )
    traced = [r for r in results if "trace" in r]
    if traced:
        print("\nfrom the trace (main thread; the flood's tasks, the benchmark's inputs left out):")
        print(f"{'case':<8}{'CPU ms':>8}{'longest task CPU ms':>21}{'tasks > 1 frame CPU':>21}")
        for r in traced:
            t = r["trace"]
            print(
                f"{r['case']:<8}{t['main_thread_cpu_ms']:>8}{t['flood_longest_task_cpu_ms']:>21}"
                f"{t['flood_tasks_over_a_frame_cpu']:>21}"
            )


TABLE_HEAD = """\
           all tasks     flood only     frame gap
case     longest  >50ms  longest  >50ms      all    flood  syncs/s    bytes/s  seconds
          (ms)           (ms)               (ms)     (ms)"""


if __name__ == "__main__":
    main()
