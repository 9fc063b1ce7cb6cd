"""The agent as the kernel sees it: a real ``python -m skyward.agent`` on a UNIX socket."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from skyward import wire
from skyward.agent import LineSink
from skyward.transport.bootstrap import AGENT_MODULES

SOURCE = Path(__file__).resolve().parents[2] / "skyward_jupyter"


class Client:
    """A bare protocol client: frames in and out, nothing else."""

    def __init__(self, path: str, since: int = 0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.decoder = wire.FrameDecoder(plain=True)
        self.pending: list[dict[str, Any]] = []
        self.count = 0
        self.send({"op": "hello", "since": since})
        self.hello = self.recv()
        assert self.hello["k"] == "hello"

    def send(self, message: dict[str, Any]) -> None:
        self.sock.sendall(wire.encode(message))

    def recv(self, timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while not self.pending:
            self.sock.settimeout(max(0.001, deadline - time.monotonic()))
            data = self.sock.recv(1 << 20)
            if not data:
                raise EOFError("agent closed the connection")
            self.pending.extend(self.decoder.feed(data))
        return self.pending.pop(0)

    def exec(self, code: str, task: str | None = None) -> str:
        self.count += 1
        task = task or f"t{self.count}"
        self.send({"op": "exec", "task": task, "code": code, "filename": f"<cell {task}>"})
        return task

    def until_done(self, task: str, timeout: float = 10.0) -> list[dict[str, Any]]:
        frames = []
        while True:
            frame = self.recv(timeout)
            frames.append(frame)
            if frame["k"] == "done" and frame["task"] == task:
                return frames

    def run(self, code: str) -> tuple[list[tuple[str, str, bool]], dict[str, Any]]:
        """Run a cell; its log lines (raw) and its done frame."""
        task = self.exec(code)
        frames = self.until_done(task)
        assert frames[0] == {"k": "started", "task": task, "seq": frames[0]["seq"]}
        lines = [line for f in frames if f["k"] == "log" for line in f["lines"]]
        assert all(f["task"] == task for f in frames)
        return lines, frames[-1]

    def close(self) -> None:
        self.sock.close()


def screen(lines: list[tuple[str, str, bool]]) -> list[tuple[str, str]]:
    """What a client shows after applying overwrite (a line replaces its stream's last)."""
    shown: list[tuple[str, str]] = []
    last: dict[str, int] = {}
    for stream, text, overwrite in lines:
        if overwrite and stream in last:
            shown[last[stream]] = (stream, text)
        else:
            last[stream] = len(shown)
            shown.append((stream, text))
    return shown


class AgentProcess:
    def __init__(self, *args: str, folder: str = "run") -> None:
        self.dir = tempfile.mkdtemp(prefix="sky-", dir="/tmp")
        self.path = os.path.join(self.dir, folder, "agent.sock")
        env = {**os.environ, "PYTHONPATH": str(SOURCE)}
        self.log = open(os.path.join(self.dir, "agent.log"), "wb")  # noqa: SIM115
        started = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "skyward.agent", "--socket", self.path, *args],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=self.log,
        )
        while not os.path.exists(self.path):
            assert self.proc.poll() is None, "agent exited early"
            assert time.perf_counter() - started < 10
            time.sleep(0.002)
        self.startup = time.perf_counter() - started

    def client(self, since: int = 0) -> Client:
        return Client(self.path, since)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def agent() -> Iterator[AgentProcess]:
    process = AgentProcess("--node", "2", "--nodes", "4", "--cluster", "c-test")
    yield process
    process.stop()


@pytest.fixture
def client(agent: AgentProcess) -> Iterator[Client]:
    c = agent.client(since=1 << 62)  # only live frames: earlier tests' are not replayed
    yield c
    c.close()


@pytest.fixture
def fresh() -> Iterator[AgentProcess]:
    process = AgentProcess()
    yield process
    process.stop()


def test_hello(agent: AgentProcess, client: Client) -> None:
    hello = client.hello
    assert hello["pid"] == agent.proc.pid
    assert hello["python"] == ".".join(map(str, sys.version_info[:3]))
    assert hello["node"] == 2 and hello["nodes"] == 4 and hello["cluster"] == "c-test"
    assert isinstance(hello["cwd"], str) and isinstance(hello["seq"], int)
    assert agent.startup < 2.0
    assert os.stat(agent.path).st_mode & 0o777 == 0o600


def test_ping(client: Client) -> None:
    client.send({"op": "ping", "id": 7})
    pong = client.recv()
    assert pong["k"] == "pong" and pong["id"] == 7 and abs(pong["time"] - time.time()) < 5


def test_expression_result_and_state(client: Client) -> None:
    assert client.run("1 + 1")[1]["result"] == "2"
    lines, done = client.run("x = 41")
    assert done["ok"] and done["result"] is None and done["error"] is None and lines == []
    assert client.run("x + 1")[1]["result"] == "42"
    assert client.run("None")[1]["result"] is None
    assert client.run("'é' * 3")[1]["result"] == "'ééé'"


def test_environment(client: Client) -> None:
    names = "('SKYWARD_NODE', 'SKYWARD_NODES', 'SKYWARD_CLUSTER')"
    code = f"import os; [os.environ[k] for k in {names}]"
    assert client.run(code)[1]["result"] == "['2', '4', 'c-test']"


def test_progress_bar_collapses_to_one_line(client: Client) -> None:
    code = (
        "import time\n"
        "for i in range(50):\n"
        "    print(f'\\rstep {i}', end='')\n"
        "    time.sleep(0.02)\n"
        "print()\n"
    )
    lines, done = client.run(code)
    assert done["ok"]
    assert 2 < len(lines) < 50  # provisional updates were sent, and coalesced
    assert lines[-1] == ("stdout", "step 49", True)
    assert all(overwrite for _, _, overwrite in lines[1:])
    assert screen(lines) == [("stdout", "step 49")]


def test_partial_line_is_sent_before_its_end(client: Client) -> None:
    task = client.exec("import time\nprint('waiting', end='')\ntime.sleep(0.4)\nprint(' done')")
    started = client.recv()
    assert started["k"] == "started"
    log = client.recv(timeout=0.3)  # long before the cell ends
    assert log["k"] == "log" and log["lines"] == [("stdout", "waiting", False)]
    frames = client.until_done(task)
    assert frames[0]["lines"] == [("stdout", "waiting done", True)]


def test_stdout_stderr_order_kept(client: Client) -> None:
    code = "import sys\nfor i in range(5):\n    print('o', i)\n    print('e', i, file=sys.stderr)\n"
    lines, _ = client.run(code)
    expected = []
    for i in range(5):
        expected += [("stdout", f"o {i}", False), ("stderr", f"e {i}", False)]
    assert lines == expected


def test_subprocess_and_fd_output_captured(client: Client) -> None:
    code = (
        "import os, subprocess, sys\n"
        "os.system('echo hi')\n"
        "subprocess.run(['sh', '-c', 'echo err >&2'])\n"
        "os.write(1, b'raw\\n')\n"
        "sys.stdout.buffer.write('bytes é\\n'.encode())\n"
    )
    lines, done = client.run(code)
    assert done["ok"]
    assert sorted(screen(lines)) == [
        ("stderr", "err"),
        ("stdout", "bytes é"),
        ("stdout", "hi"),
        ("stdout", "raw"),
    ]


def test_forked_child_output_captured(client: Client) -> None:
    code = "import os\nif not (pid := os.fork()):\n    print('child')\n    os._exit(0)\n"
    code += "os.waitpid(pid, 0)"
    lines, done = client.run(code)
    assert done["ok"] and screen(lines) == [("stdout", "child")]


def test_exception_traceback(client: Client) -> None:
    code = "print('before')\ndef f():\n    return 1 / 0\nf()\n"
    task = client.exec(code)
    frames = client.until_done(task)
    assert [f["k"] for f in frames] == ["started", "log", "done"]
    assert frames[1]["lines"] == [("stdout", "before", False)]
    done = frames[-1]
    assert done["ok"] is False and done["result"] is None
    error = done["error"]
    assert error["ename"] == "ZeroDivisionError" and error["evalue"] == "division by zero"
    text = "".join(error["traceback"])
    assert error["traceback"][0] == "Traceback (most recent call last):\n"
    assert f'File "<cell {task}>", line 4, in <module>' in text and "    f()\n" in text
    assert f'File "<cell {task}>", line 3, in f' in text and "return 1 / 0" in text
    assert "agent.py" not in text
    assert error["traceback"][-1] == "ZeroDivisionError: division by zero\n"


def test_syntax_error_and_system_exit(client: Client) -> None:
    done = client.run("x = (1 +\n")[1]
    assert done["ok"] is False and done["error"]["ename"] == "SyntaxError"
    assert "agent.py" not in "".join(done["error"]["traceback"])
    done = client.run("raise SystemExit(3)")[1]
    assert done["error"]["ename"] == "SystemExit" and done["error"]["evalue"] == "3"
    assert client.run("2 * 21")[1]["result"] == "42"


def test_top_level_await(client: Client) -> None:
    code = "import asyncio\nawait asyncio.sleep(0)\nawait asyncio.sleep(0, 'slept')"
    assert client.run(code)[1]["result"] == "'slept'"


def test_interrupt(client: Client) -> None:
    client.send({"op": "interrupt", "task": "nobody"})  # not running: ignored
    task = client.exec("import time\nprint('sleeping')\ntime.sleep(30)")
    assert client.recv()["k"] == "started"
    assert client.recv()["lines"] == [("stdout", "sleeping", False)]
    began = time.monotonic()
    client.send({"op": "interrupt", "task": task})
    done = client.until_done(task)[-1]
    assert time.monotonic() - began < 2
    assert done["ok"] is False and done["error"]["ename"] == "KeyboardInterrupt"
    assert "time.sleep(30)" in "".join(done["error"]["traceback"])
    assert client.run("'alive'")[1]["result"] == "'alive'"


def test_interrupt_right_after_started_and_while_queued(client: Client) -> None:
    first = client.exec("import time\ntime.sleep(30)")
    queued = client.exec("print('never')")
    assert client.recv()["k"] == "started"
    client.send({"op": "interrupt", "task": queued})
    client.send({"op": "interrupt", "task": first})  # maybe before its code began
    frames = client.until_done(queued, timeout=3)
    done = [f for f in frames if f["k"] == "done"]
    assert [d["task"] for d in done] == [first, queued]
    assert all(d["error"]["ename"] == "KeyboardInterrupt" for d in done)
    assert not [f for f in frames if f["k"] == "log"]


def test_cells_queue_in_order(client: Client) -> None:
    tasks = [client.exec(f"import time; time.sleep(0.01); print({i})") for i in range(5)]
    frames = client.until_done(tasks[-1])
    assert [(f["k"], f["task"]) for f in frames if f["k"] != "log"] == [
        (k, t) for t in tasks for k in ("started", "done")
    ]
    seqs = [f["seq"] for f in frames]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))


def test_hundred_thousand_lines(client: Client) -> None:
    began = time.perf_counter()
    lines, done = client.run("for i in range(100000): print(i)")
    elapsed = time.perf_counter() - began
    assert done["ok"]
    assert lines == [("stdout", str(i), False) for i in range(100000)]
    assert elapsed < 2.0


def test_megabyte_line_and_unicode(client: Client) -> None:
    lines, done = client.run("print('é' + 'x' * (1 << 20) + '→'); print('日本語 🚀')")
    assert done["ok"]
    assert screen(lines) == [
        ("stdout", "é" + "x" * (1 << 20) + "→"),
        ("stdout", "日本語 🚀"),
    ]


def test_result_repr_truncated(client: Client) -> None:
    result = client.run("'a' * 300000")[1]["result"]
    assert 100_000 < len(result) < 100_200 and result.endswith("truncated]")


def test_new_connection_replaces_old(agent: AgentProcess, client: Client) -> None:
    newer = agent.client(since=1 << 62)
    try:
        with pytest.raises((EOFError, OSError)):
            client.recv(timeout=2)
        assert newer.run("'still here'")[1]["result"] == "'still here'"
    finally:
        newer.close()


def test_reconnect_replays_exactly_what_was_missed(fresh: AgentProcess) -> None:
    first = fresh.client()
    assert first.hello["seq"] == 0
    first.run("print('one')")
    task = first.exec("import time\nfor i in range(3):\n    print(i)\n    time.sleep(0.1)\n")
    seen = first.until_done(task)
    missed = seen[2:]
    since = seen[1]["seq"]
    first.close()
    late = fresh.client(since=since)
    assert late.hello["seq"] == seen[-1]["seq"]
    assert [late.recv() for _ in missed] == missed
    # output produced while nobody listens is kept too
    task = late.exec("import time\ntime.sleep(0.2)\nprint('alone')")
    assert late.recv()["k"] == "started"
    since = late.hello["seq"] + 1
    late.close()
    time.sleep(0.5)
    again = fresh.client(since=since)
    frames = [again.recv(), again.recv()]
    assert frames[0]["lines"] == [("stdout", "alone", False)]
    assert frames[1]["k"] == "done" and frames[1]["task"] == task
    assert [f["seq"] for f in frames] == [since + 1, since + 2]
    again.close()


def test_shutdown(fresh: AgentProcess) -> None:
    c = fresh.client()
    c.send({"op": "shutdown"})
    assert c.recv()["k"] == "bye"
    assert fresh.proc.wait(timeout=5) == 0
    assert not os.path.exists(fresh.path)
    c.close()


def test_shutdown_interrupts_a_running_cell(fresh: AgentProcess) -> None:
    c = fresh.client()
    c.exec("import time\ntime.sleep(30)")
    assert c.recv()["k"] == "started"
    c.send({"op": "shutdown"})
    frames = [c.recv()]
    assert frames[0]["k"] == "bye"
    assert fresh.proc.wait(timeout=5) == 0
    c.close()


def test_socket_path_longer_than_an_address_holds() -> None:
    deep = os.path.join("h" * 60, ".skyward" + "x" * 60)
    process = AgentProcess(folder=deep)
    try:
        assert len(process.path) > 108
        short = os.path.join(process.dir, "s")
        os.symlink(os.path.dirname(process.path), short)
        c = Client(os.path.join(short, "agent.sock"))
        assert c.run("6 * 7")[1]["result"] == "42"
        assert c.run("import os; os.getcwd()")[1]["result"] == repr(os.getcwd())
        c.close()
    finally:
        process.stop()


UPLOADED = AGENT_MODULES  # exactly what the bootstrap uploads


def test_runs_from_the_uploaded_files_alone(tmp_path: Path) -> None:
    """On an instance only these files exist, and no site-packages (no cloudpickle)."""
    package = tmp_path / "lib" / "skyward"
    package.mkdir(parents=True)
    for name in UPLOADED:
        shutil.copy(SOURCE / "skyward" / name, package / name)
    path = str(tmp_path / "run" / "agent.sock")  # the agent creates run/
    process = subprocess.Popen(
        [sys.executable, "-S", "-m", "skyward.agent", "--socket", path],
        env={"PYTHONPATH": str(tmp_path / "lib"), "PATH": os.environ.get("PATH", "")},
        stdin=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not os.path.exists(path):
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.005)
        c = Client(path)
        code = "import sys, skyward; (skyward.__file__, 'cloudpickle' in sys.modules)"
        result = c.run(code)[1]["result"]
        assert result == repr((str(package / "__init__.py"), False))
        c.send({"op": "shutdown"})
        assert c.recv()["k"] == "bye"
        assert process.wait(timeout=5) == 0
        c.close()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_stale_socket_is_replaced() -> None:
    first = AgentProcess()
    first.proc.kill()
    first.proc.wait()
    try:
        second = subprocess.Popen(
            [sys.executable, "-m", "skyward.agent", "--socket", first.path],
            env={**os.environ, "PYTHONPATH": str(SOURCE)},
            stdin=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 5
            while True:
                try:
                    c = Client(first.path)
                    break
                except OSError:
                    assert time.monotonic() < deadline
                    time.sleep(0.01)
            assert c.hello["pid"] == second.pid
            c.close()
        finally:
            second.kill()
            second.wait()
    finally:
        first.stop()


def feed(sink: LineSink, *chunks: tuple[str, str], end: bool = False) -> list[Any]:
    for chunk in chunks:
        sink.put(chunk)
    return sink.take(end)


def test_line_sink_carriage_returns() -> None:
    sink = LineSink()
    assert feed(sink, ("stdout", "a\rb\n")) == [("stdout", "b", False)]
    # "\r\n" split across flushes is one newline, not a reset
    assert feed(sink, ("stdout", "line\r")) == []  # not shown before it has waited a flush
    assert feed(sink, ("stdout", "")) == [("stdout", "line", False)]
    expected = [("stdout", "line", True), ("stdout", "next", False)]
    assert feed(sink, ("stdout", "\nnext\n")) == expected
    # a reset with nothing after it keeps the old text on screen until replaced
    assert feed(sink, ("stdout", "50%\r")) == []
    assert feed(sink, ("stdout", "")) == [("stdout", "50%", False)]
    assert feed(sink, ("stdout", "100%\r\n")) == [("stdout", "100%", True)]


def test_line_sink_streams_and_cell_end() -> None:
    sink = LineSink()
    lines = feed(sink, ("stdout", "par"), ("stderr", "e1\n"), ("stdout", "tial"), end=True)
    assert lines == [("stderr", "e1", False), ("stdout", "partial", False)]
    # the cell ended: the next cell's first line does not replace the partial one
    assert feed(sink, ("stdout", "x\n")) == [("stdout", "x", False)]
    assert feed(sink, ("stdout", "\r\r\n\n")) == [("stdout", "", False), ("stdout", "", False)]
