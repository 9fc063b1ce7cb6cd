"""The live panel, for real: JupyterLab, headless Chromium, the quickstart notebook.

JupyterLab runs from this venv; Chromium is Debian's (Playwright drives it through
``executable_path``: its own browser download is not reachable here). Screenshots go to
``test-artifacts/browser/``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "browser"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TQDM_CELL = """%%skyward run
import time
from tqdm import tqdm
for i in tqdm(range(200)):
    time.sleep(0.01)
"""


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _notebook(folder: Path) -> Path:
    """The quickstart (its `down` left to the panel's button), with tqdm on the nodes,
    a 200-step tqdm cell and the sidebar panel."""
    nb = nbformat.read(ROOT / "notebooks" / "quickstart.ipynb", as_version=4)
    cells = []
    for cell in nb.cells:
        source = cell.source.strip()
        if cell.cell_type == "code" and source == "%skyward down":
            continue
        if cell.cell_type == "code" and source.startswith("%skyward up"):
            cell.source = source + " --pip tqdm"
        cells.append(cell)
    cells.append(nbformat.v4.new_code_cell(TQDM_CELL))
    cells.append(nbformat.v4.new_code_cell("%skyward panel --sidebar"))
    nb.cells = cells
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3 (ipykernel)",
        "language": "python",
    }
    path = folder / "quickstart.ipynb"
    nbformat.write(nb, path)
    return path


def start_lab(folder: Path):
    """Start JupyterLab on ``folder``; yields its URL, then stops it (a generator)."""
    settings = folder / ".settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False})
    )
    port = _free_port()
    env = {
        **os.environ,
        "JUPYTERLAB_SETTINGS_DIR": str(folder / ".settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(folder / ".workspaces"),
    }
    log = open(folder / "lab.log", "w")  # noqa: SIM115 (closed when stopped)
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--allow-root",
            f"--ServerApp.port={port}",
            "--ServerApp.ip=127.0.0.1",
            "--ServerApp.token=",
            "--ServerApp.password=",
            "--ServerApp.disable_check_xsrf=True",
            f"--ServerApp.root_dir={folder}",
            "--LabApp.expose_app_in_browser=True",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    try:
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/status", timeout=2)
                break
            except Exception:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError(
                        "JupyterLab did not start: " + (folder / "lab.log").read_text()
                    ) from None
                time.sleep(0.3)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    chromium = _chromium()
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (scripts/setup installs it as root)")
    pytest.importorskip("playwright.sync_api")
    pytest.importorskip("sidecar")
    folder = tmp_path_factory.mktemp("lab")
    _notebook(folder)
    server = start_lab(folder)
    yield next(server), chromium
    server.close()


def _shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


def _log_lines(page, panel, node: int) -> list[str]:
    row = panel.locator(f'tr.sw-node[data-node="{node}"]')
    pre = panel.locator(f'pre.sw-log[data-node="{node}"]')
    if pre.count() == 0:
        row.click()
        pre.wait_for()
    return pre.locator(".sw-line").all_inner_texts()


def _check_rows(pre) -> None:
    """Every line of an open pane is one row tall (no wrapping: a tqdm bar stays on one
    line), and the last one is in view (the pane follows its tail)."""
    boxes = pre.evaluate(
        """(pre) => {
          const p = pre.getBoundingClientRect();
          return [...pre.querySelectorAll('.sw-line')].map((e) => {
            const r = e.getBoundingClientRect();
            return { text: e.textContent, height: r.height, content: e.scrollHeight,
                     top: r.top - p.top, bottom: r.bottom - p.top, pane: p.height };
          });
        }"""
    )
    assert boxes
    assert all(b["content"] <= b["height"] + 0.5 for b in boxes), boxes
    assert boxes[-1]["bottom"] <= boxes[-1]["pane"] + 0.5, boxes[-1]


def _check_reading(page, inline, node: int) -> None:
    """Scrolling up holds the pane still (a button leads back); scrolling to the bottom
    follows again; a selection in it survives and holds it still too; lines copy as lines."""
    from playwright.sync_api import expect

    pre = inline.locator(f'pre.sw-log[data-node="{node}"]')
    jump = inline.locator(f'pre.sw-log[data-node="{node}"] + .sw-log-jump')
    pre.hover()
    page.mouse.wheel(0, -400)
    expect(pre).to_have_attribute("data-follow", "0")
    expect(jump).to_be_visible()
    page.mouse.wheel(0, 4000)
    expect(pre).to_have_attribute("data-follow", "1")
    expect(jump).to_be_hidden()
    bar = pre.locator(".sw-stderr", has_text="200/200")
    bar.click(click_count=3)
    expect(pre).to_have_attribute("data-follow", "0")
    page.wait_for_timeout(300)
    assert "200/200" in page.evaluate("() => String(window.getSelection())")
    # several lines copy as lines
    copied, shown = pre.evaluate(
        """(pre) => {
          const lines = [...pre.querySelectorAll('.sw-line')].slice(0, 3);
          const range = document.createRange();
          range.setStartBefore(lines[0]);
          range.setEndAfter(lines[2]);
          getSelection().removeAllRanges();
          getSelection().addRange(range);
          return [String(getSelection()), lines.map((l) => l.textContent)];
        }"""
    )
    assert copied.rstrip("\n").split("\n") == shown, (copied, shown)
    jump.click()
    expect(pre).to_have_attribute("data-follow", "1")
    _check_rows(pre)


def test_panel_in_jupyterlab(lab):
    from playwright.sync_api import expect, sync_playwright

    from tests.ours import live_processes

    url, chromium = lab
    before = set(live_processes())
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1500, "height": 950})
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if "[skyward]" in m.text else None)
        try:
            page.goto(f"{url}/lab/tree/quickstart.ipynb?reset")
            page.wait_for_function("() => window.jupyterapp !== undefined", timeout=60_000)
            page.locator(".jp-Notebook").first.wait_for(timeout=60_000)
            page.locator('.jp-Notebook-ExecutionIndicator[data-status="idle"]').wait_for(
                timeout=60_000
            )
            # JupyterLab may still ask which kernel to use: take the preselected one
            dialog = page.locator(".jp-Dialog button.jp-mod-accept")
            try:
                dialog.first.wait_for(timeout=8_000)
                dialog.first.click()
            except Exception:
                pass
            page.locator('.jp-Notebook-ExecutionIndicator[data-status="idle"]').wait_for(
                timeout=60_000
            )
            # not awaited: the command's promise ends with the last cell
            page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")

            inline = page.locator(".jp-Notebook .sw-panel").first
            inline.wait_for(timeout=60_000)
            ready = inline.locator('tr.sw-node[data-state="ready"]')
            expect(ready).to_have_count(2, timeout=180_000)
            expect(inline).to_have_attribute("data-cluster-state", "ready")
            _shot(page, "1-ready")

            # the sidebar view (the last cell) shows the same nodes
            side = page.locator(".jp-SideBar .sw-panel, #jp-right-stack .sw-panel").first
            side.wait_for(timeout=180_000)
            expect(side.locator("tr.sw-node")).to_have_count(2, timeout=30_000)
            ids = inline.locator("td.sw-instance").all_inner_texts()
            expect(side.locator("td.sw-instance")).to_have_text(ids)

            # the tqdm cell: one bar row per node, at 100%
            for node in (0, 1):
                pre = inline.locator(f'pre.sw-log[data-node="{node}"]')
                if pre.count() == 0:
                    inline.locator(f'tr.sw-node[data-node="{node}"]').click()
                expect(pre).to_contain_text("200/200", timeout=120_000)
                # the quickstart's two cells, then the tqdm cell
                expect(pre.locator(".sw-meta", has_text=re.compile("done in"))).to_have_count(
                    3, timeout=60_000
                )
                lines = _log_lines(page, inline, node)
                bars = [t for t in lines if re.search(r"\|\s*\d+/200\b", t)]
                assert len(bars) == 1, bars
                assert bars[0].lstrip().startswith("100%"), bars
                expect(pre.locator(".sw-stderr", has_text="200/200")).to_have_count(1)
                _check_rows(pre)
            _check_reading(page, inline, 0)
            # the CPU chart has points (the agent samples every 2 s)
            cpu = inline.locator('canvas[data-metric="cpu_percent"]').first
            page.wait_for_function(
                "(c) => Number(c.dataset.points) >= 2", arg=cpu.element_handle(), timeout=30_000
            )
            inline.scroll_into_view_if_needed()
            _shot(page, "2-logs-and-charts")
            side.scroll_into_view_if_needed()
            _shot(page, "3-sidebar")

            # the shut-down button (press, then confirm) destroys every node
            button = side.locator('button[data-action="shutdown"]')
            button.click()
            button.click()
            for view in (inline, side):
                expect(view.locator('tr.sw-node[data-state="destroyed"]')).to_have_count(
                    2, timeout=60_000
                )
                expect(view).to_have_attribute("data-cluster-state", "destroyed")
            _shot(page, "4-destroyed")
            assert not [e for e in errors if "failed" in e], errors
        finally:
            _shot(page, "last")
            browser.close()
    deadline = time.monotonic() + 20
    while set(live_processes()) - before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert set(live_processes()) - before == set()
