"""Remote cells that feel local, through a real kernel and real SSH."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from .kernel import cluster, ok

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def k():
    with cluster("--provider container --nodes 2 --pip matplotlib") as kernel:
        yield kernel


def test_variables_in_automatically_and_forced(k):
    ok(k, "a = 5\nimport os as _os\nhidden = 7")
    assert ok(k, "%%skyward run\na * 2").values()[0] == "10"
    # a name the cell defines itself is not sent; --no-push sends nothing
    assert ok(k, "%%skyward run\na = 3\na").values()[1] == "3"
    text = k.execute("%%skyward run --no-push\ndel a\na").text()
    assert "NameError" in text
    assert ok(k, "%%skyward run --push hidden --no-push\nhidden").values()[0] == "7"


def test_unpicklable_variable_fails_before_running(k):
    ok(k, "import threading\nlock = threading.Lock()\nran = 0")
    result = k.execute("%%skyward run\nran = 1\nprint(lock)")
    assert not result.ok
    assert result.error()["ename"] == "PushError"
    assert "variable 'lock'" in result.text() and "pickle" in result.text()
    assert ok(k, "%%skyward run --no-push\nglobals().get('ran', 0)").values()[0] == "0"


def test_large_push_warns_with_the_size(k):
    ok(k, "big = b'x' * (101 * 1000 * 1000)")
    result = ok(k, "%%skyward run --on 0\nlen(big)", timeout=120)
    assert result.values() == {0: "101000000"}
    warnings = [m["content"]["text"] for _, m in result.messages if m["msg_type"] == "stream"]
    assert any("101.0 MB" in w and "big" in w for w in warnings)
    ok(k, "del big")
    ok(k, "%%skyward run --on 0 --no-push\ndel big")


def test_pull_one_node_and_many(k):
    ok(k, "%%skyward run --pull b\nimport os\nb = int(os.environ['SKYWARD_NODE']) * 10")
    assert ok(k, "b").text().strip().endswith("{0: 0, 1: 10}")
    ok(k, "%%skyward run --on 1 -o b\nb = 'one'")
    assert ok(k, "b").text().strip().endswith("'one'")
    result = k.execute("%%skyward run --pull nope\n1")
    assert not result.ok and "nope" in result.text()


def test_rich_output_in_order_tagged_by_node(k):
    code = (
        "%%skyward run --on 1\n"
        "class Html:\n    def _repr_html_(self):\n        return '<b>hi</b>'\n"
        "print('before')\ndisplay(Html())\nprint('after')\nHtml()\n"
    )
    result = ok(k, code)
    shown = [m for _, m in result.messages if m["msg_type"] in ("display_data", "stream")]
    kinds = [("html" if "text/html" in m["content"].get("data", {}) else "text") for m in shown]
    assert kinds == ["text", "html", "text", "html"]
    rich = [m["content"] for m in shown if m["msg_type"] == "display_data"]
    assert all(c["metadata"].get("skyward", {}).get("node") == 1 for c in rich)
    assert rich[1]["data"]["text/plain"].startswith("Out[1:")  # the value, labelled by node
    texts = [m["content"]["text"] for m in shown if m["msg_type"] == "stream"]
    assert texts == ["[node 1] before\n", "[node 1] after\n"]


def test_matplotlib_figure_arrives_as_png(k):
    code = "%%skyward run --on 0\nimport matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\n"
    result = ok(k, code, timeout=120)
    images = [m for _, m in result.messages if "image/png" in m["content"].get("data", {})]
    assert len(images) == 1
    import base64

    assert base64.b64decode(images[0]["content"]["data"]["image/png"]).startswith(b"\x89PNG")


def test_exception_type_round_trip_and_aggregate(k):
    result = k.execute("%%skyward run --on 0\n{}['missing']")
    assert result.error()["ename"] == "KeyError"
    text = result.text()
    assert "[node 0] remote KeyError" in text and "line 2" in text
    ok(k, "class Mine(Exception):\n    pass")
    assert k.execute("%%skyward run --on 1\nraise Mine('custom')").error()["ename"] == "Mine"
    both = k.execute("%%skyward run\nimport os\nraise ValueError(os.environ['SKYWARD_NODE'])")
    assert both.error()["ename"] == "CompositeError"
    assert "[node 0] ValueError: 0" in both.error()["evalue"]
    assert "[node 1] ValueError: 1" in both.error()["evalue"]
    assert "[node 0] remote ValueError" in both.text()
    assert "[node 1] remote ValueError" in both.text()


def test_output_flushed_on_error_and_interleaving_kept(k):
    code = (
        "%%skyward run --on 0\nimport sys\n"
        "for i in range(3):\n    print('out', i)\n    print('err', i, file=sys.stderr)\n"
        "raise RuntimeError('after output')\n"
    )
    result = k.execute(code)
    assert not result.ok
    # each stream in order (a local kernel, too, sends each stream's buffer apart)
    streams = {"stdout": "", "stderr": ""}
    for name, text in result.streams():
        streams[name] += text
    shown = {
        k: [line.removeprefix("[node 0] ") for line in v.splitlines()] for k, v in streams.items()
    }
    assert shown == {"stdout": ["out 0", "out 1", "out 2"], "stderr": ["err 0", "err 1", "err 2"]}


def test_unicode_long_lines_and_binary_junk(k):
    code = (
        "%%skyward run --on 0\nimport sys\nprint('héllo ✓ 日本')\nprint('x' * 200000)\n"
        "sys.stdout.flush()\nsys.stdout.buffer.write(bytes(range(256)) + b'\\n')\n"
        "sys.stdout.buffer.flush()\nprint('still fine')\n"
    )
    text = ok(k, code).text()
    assert "héllo ✓ 日本" in text and "x" * 200000 in text and "still fine" in text


def test_targeting_and_grouped_outputs(k):
    assert ok(k, "%%skyward run --on head\n'h'").values() == {0: "'h'"}
    result = ok(
        k, "%%skyward run --group-outputs\nimport os\nprint('n', os.environ['SKYWARD_NODE'])"
    )
    text = "".join(text for name, text in result.streams() if name == "stdout")
    assert text == "── node 0 ──\nn 0\n── node 1 ──\nn 1\n"


def test_distributed_environment_and_node_info(k):
    code = (
        "%%skyward run\nimport os, skyward\ninfo = skyward.node()\n"
        "env = os.environ\n"
        "(env['RANK'], env['WORLD_SIZE'], env['MASTER_ADDR'] == info.addresses[0], info.head)"
    )
    text = ok(k, code).text()
    assert "('0', '2', True, True)" in text and "Out[0:" in text
    assert "('1', '2', True, False)" in text and "Out[1:" in text


def test_timeout_interrupts_and_the_next_cell_runs(k):
    start = time.monotonic()
    result = k.execute("%%skyward run --timeout 1\nimport time\ntime.sleep(30)")
    assert time.monotonic() - start < 10
    assert result.error()["ename"] == "CellTimeout"
    assert "KeyboardInterrupt at line 3" in result.text()
    assert ok(k, "%%skyward run\n1 + 1").values()[1] == "2"


def test_double_interrupt_kills_and_restarts_clean(k):
    ok(k, "%%skyward run --no-push\nkept = 'before'")
    threading.Timer(1.0, k.interrupt).start()
    threading.Timer(2.0, k.interrupt).start()
    start = time.monotonic()
    code = (
        "%%skyward run\nimport signal, time\n"
        "signal.signal(signal.SIGINT, signal.SIG_IGN)\ntime.sleep(60)"
    )
    result = k.execute(code)
    assert time.monotonic() - start < 10
    assert result.error()["ename"] == "KeyboardInterrupt"
    text = result.text()
    assert "killed" in text and "variables are lost" in text
    after = ok(k, "%%skyward run --no-push\n'kept' in globals()").values()
    assert after == {0: "False", 1: "False"}
    assert ok(k, "%%skyward run\n'still' + ' here'").values()[1] == "'still here'"


def _crash(k, code):
    before = ok(
        k, "from skyward.jupyter.extension import session\nsorted(session().current.instances)"
    )
    started = time.monotonic()
    result = k.execute("%%skyward run --on 0\nprint('last words', flush=True)\n" + code)
    took = time.monotonic() - started
    assert not result.ok and result.error()["ename"] == "RemoteCrash"
    assert "[node 0] last words\n" in [text for _, text in result.streams()]
    after = ok(k, "sorted(session().current.instances)")
    assert after.text() == before.text()  # the same instance: nothing was replaced
    return result, took


@pytest.mark.parametrize(
    ("code", "words"),
    [
        ("import os\nos._exit(3)", "exited with status 3"),
        ("import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)", "killed by SIGSEGV"),
    ],
)
def test_a_crash_in_user_code_is_a_remote_crash_not_a_preemption(k, code, words):
    ok(k, "%%skyward run --on 0 --no-push\nkept = 1")
    result, took = _crash(k, code)
    assert took < 2.0, took
    assert words in result.error()["evalue"] and "variables are gone" in result.error()["evalue"]
    assert ok(k, "%%skyward run --on 0 --no-push\n'kept' in globals()").values() == {0: "False"}
    events = ok(k, "[type(e).__name__ for e in _facts]").text()
    assert "InstancePreempted" not in events


@pytest.mark.skipif(
    os.geteuid() != 0 or not os.access("/sys/fs/cgroup/memory", os.W_OK),
    reason="needs root and a writable cgroup v1 memory controller to cap the worker",
)
def test_the_oom_killer_is_named_in_the_cell(k):
    pid = int(ok(k, "%%skyward run --on 0 --no-push\nimport os\nos.getpid()").values()[0])
    group = Path(f"/sys/fs/cgroup/memory/skyward-cell-{os.getpid()}")
    group.mkdir()
    try:
        (group / "memory.limit_in_bytes").write_text(str(200 << 20))
        (group / "memory.memsw.limit_in_bytes").write_text(str(200 << 20))
        (group / "cgroup.procs").write_text(str(pid))
        result, _ = _crash(k, "hog = bytearray(1 << 30)")
        assert "OOM killer" in result.error()["evalue"]
    finally:
        for leftover in (group / "cgroup.procs").read_text().split():
            Path("/sys/fs/cgroup/memory/cgroup.procs").write_text(leftover)
        group.rmdir()


def test_a_remote_builtin_error_is_caught_as_its_type(k):
    code = (
        "from skyward.jupyter.extension import dispatch\n"
        "try:\n"
        "    await dispatch('run --on 0', 'raise ValueError(\"v\")')\n"
        "except ValueError as exc:\n"
        "    caught = (type(exc).__name__, isinstance(exc, ValueError), str(exc))\n"
    )
    ok(k, code)
    assert ok(k, "caught").text().strip().endswith("('ValueError', True, '[node 0] v')")


def test_a_remote_exception_is_never_unpickled_in_the_kernel(k, tmp_path):
    marker = tmp_path / "ran-in-the-kernel"
    code = (
        "%%skyward run --on 0\n"
        "import os\n"
        "class Evil(Exception):\n"
        "    def __reduce__(self):\n"
        f"        return (os.system, ('touch {marker}',))\n"
        "raise Evil('boom')\n"
    )
    result = k.execute(code)
    assert result.error()["ename"] == "Evil"
    time.sleep(0.5)
    assert not marker.exists()


def test_output_past_max_output_is_cut_with_a_line_saying_so(k):
    result = ok(
        k, "%%skyward run --on 0 --max-output 100KB\nfor i in range(3000):\n    print('y' * 99)"
    )
    shown = "".join(text for _, text in result.streams())
    assert 100_000 <= len(shown) < 110_000
    assert "of output not shown (over --max-output 0.1 MB" in shown
    bad = k.execute("%%skyward run --max-output lots\n1")
    assert "--max-output 'lots'" in bad.text()
