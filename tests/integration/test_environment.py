"""The kernel's environment on the node: its packages, its local modules, its files.

Real kernels started in a notebook folder of their own, real container nodes, no --pip.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import os
import re
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from .kernel import cluster, loaded, ok

pytestmark = pytest.mark.slow

HELPERS = "def scale(xs, k):\n    return [x * k for x in xs]\n"
PLOT = (
    "import numpy as np\nimport matplotlib\nimport matplotlib.pyplot as plt\nimport helpers\n"
    "xs = np.linspace(0, 1, 5)\nys = helpers.scale(list(xs), 3)\n"
    "fig, ax = plt.subplots(figsize=(2, 2), dpi=50)\nax.plot(xs, ys)\n"
    "print(np.round(ys, 3).tolist(), matplotlib.__version__)\nfig"
)


def outputs(result):
    """(kind, text, has image) of each output, the node's metadata left out."""
    found = []
    for _, msg in result.messages:
        kind, content = msg["msg_type"], msg["content"]
        if kind == "stream":
            found.append(("stream", content["text"].replace("[node 0] ", "")))
        elif kind in ("display_data", "execute_result"):
            data = content["data"]
            text = re.sub(r"^(Out\[\d+:\d+\]: |\[node 0\] )", "", data.get("text/plain", ""))
            png = base64.b64decode(data["image/png"]) if "image/png" in data else b""
            found.append(("data", png[16:24], text))  # the image's width and height
    return found


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("nb") / "tutorial"
    root.mkdir()
    (root / "helpers.py").write_text(HELPERS)
    return root


@pytest.fixture(scope="module")
def k(folder):
    with cluster("--provider container --nodes 2", timeout=900, cwd=str(folder)) as kernel:
        yield kernel


def test_notebook_runs_remotely_as_locally_with_no_pip(k):
    up = k.up.text()
    assert "package sync:" in up and "left behind (frontend only): " in up
    local = ok(k, PLOT)
    remote = ok(k, "%%skyward run --on 0\n" + PLOT)
    assert outputs(remote) == outputs(local)
    assert any(o[0] == "data" and o[1] for o in outputs(remote))  # the figure is an image
    where = ok(k, "%%skyward run --on 0\nimport matplotlib; matplotlib.__file__")
    assert ".skyward/venv" in where.values()[0]  # from the synced venv, not the base


def test_edited_helpers_are_seen_by_the_next_remote_cell(k, folder):
    ok(k, "%%skyward run\nimport helpers\nhelpers.scale([1], 2)")
    (folder / "helpers.py").write_text(HELPERS.replace("x * k", "x * k + 1000"))
    values = ok(k, "%%skyward run\nhelpers.scale([1], 2)").values()
    assert values == {0: "[1002]", 1: "[1002]"}
    (folder / "helpers.py").write_text(HELPERS)


def test_cells_run_in_the_notebook_folders_name(k, folder):
    values = ok(k, "%%skyward run --on 0\nimport os; os.path.basename(os.getcwd())").values()
    assert values == {0: repr(folder.name)}


def test_get_of_200_mb_is_byte_identical_with_a_progress_bar(k, folder):
    made = ok(
        k,
        "%%skyward run --on 1\nimport hashlib, os\ndata = os.urandom(200 * 1000 * 1000)\n"
        "open('out/big.bin', 'wb').write(data) if os.makedirs('out', exist_ok=True) is None "
        "else 0\nhashlib.sha256(data).hexdigest()",
        timeout=120,
    )
    digest = made.values()[1].strip("'")
    got = ok(k, "%skyward get out/big.bin --on 1", timeout=300)
    local = folder / "big.bin"
    assert hashlib.sha256(local.read_bytes()).hexdigest() == digest
    bars = [
        m["content"]["data"]["text/plain"]
        for _, m in got.messages
        if m["msg_type"] in ("display_data", "update_display_data")
    ]
    assert len(bars) >= 2 and "[#" in bars[-1] and "100%" in bars[-1]
    local.unlink()


def test_sync_twice_sends_nothing_the_second_time(k, folder):
    data = folder / "data"
    data.mkdir()
    (data / "a.csv").write_text("x\n" * 1000)
    (data / "b.bin").write_bytes(os.urandom(100_000))
    (data / "skip.log").write_text("ignored")
    (data / ".gitignore").write_text("*.log\n")
    first = ok(k, "%skyward sync data").text()
    assert "3 file(s)" in first.split("synced")[1] or "6 file(s)" in first
    second = ok(k, "%skyward sync data").text()
    assert "0 file(s), 0 B sent" in second
    listing = ok(k, "%%skyward run --on 0\nimport os; sorted(os.listdir('data'))").values()[0]
    assert listing == repr([".gitignore", "a.csv", "b.bin"])


def test_module_missing_on_the_node_says_what_to_type(k):
    result = k.execute(
        "%%skyward run --on 0\nraise ModuleNotFoundError(\"No module named 'six'\", name='six')"
    )
    assert not result.ok
    import six

    assert f"%skyward up --pip six=={six.__version__}" in result.text()


# -- a kernel with a pinned older package, and one no index has ------------------------


def _absent_distribution(target: Path) -> None:
    info = target / "skyward_absent_pkg-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: skyward-absent-pkg\nVersion: 1.0\n"
    )
    (info / "RECORD").write_text("")


class _Index(http.server.BaseHTTPRequestHandler):
    """PyPI's simple index, relayed, until ``failing`` is set: then every answer is 500."""

    failing = False

    def do_GET(self):  # noqa: N802
        if type(self).failing:
            self.send_response(500)
            self.end_headers()
            return
        accept = self.headers.get("Accept", "text/html")
        request = urllib.request.Request(f"https://pypi.org{self.path}", headers={"Accept": accept})
        try:
            with urllib.request.urlopen(request, timeout=60) as answer:
                body, kind = answer.read(), answer.headers.get("Content-Type", "text/html")
        except urllib.error.HTTPError as exc:
            self.send_response(exc.code)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def pinned(tmp_path_factory):
    target = tmp_path_factory.mktemp("pinned")
    uv = Path(sys.executable).with_name("uv")
    subprocess.run(
        [str(uv), "pip", "install", "--quiet", "--target", str(target), "six==1.16.0"], check=True
    )
    _absent_distribution(target)
    env = dict(os.environ, PYTHONPATH=str(target))
    with loaded(env=env, cwd=str(tmp_path_factory.mktemp("pinned-nb"))) as kernel:
        yield kernel


def test_pinned_package_is_at_that_version_on_the_node(pinned):
    assert ok(pinned, "import six; six.__version__").text().strip() == "'1.16.0'"
    up = ok(pinned, "%skyward up --provider container", timeout=900).text()
    lines = [ln for ln in up.splitlines() if "skyward-absent-pkg" in ln]
    assert len(lines) == 1 and "not on the node's package index" in lines[0]
    assert ok(pinned, "%%skyward run\nimport six; six.__version__").values()[0] == "'1.16.0'"
    ok(pinned, "%skyward down", timeout=60)


def test_an_index_answering_500_leaves_a_working_cluster(pinned):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Index)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/simple"
    try:
        ok(pinned, f"import os; os.environ['UV_INDEX_URL'] = {url!r}")
        ok(pinned, "%skyward up --provider container", timeout=900)  # the cache learns it
        ok(pinned, "%skyward down", timeout=60)
        _Index.failing = True
        up = ok(pinned, "%skyward up --provider container", timeout=900).text()
        line = [ln for ln in up.splitlines() if ln.startswith("package sync:")]
        assert len(line) == 1 and "the index failed" in line[0]
        assert "skyward-absent-pkg==1.0 (not in uv's cache, and the index failed)" in line[0]
        assert ok(pinned, "%%skyward run\n6 * 7").values()[0] == "42"
    finally:
        _Index.failing = False
        ok(pinned, "import os; os.environ.pop('UV_INDEX_URL', None)")
        pinned.execute("%skyward down", timeout=60)
        server.shutdown()
