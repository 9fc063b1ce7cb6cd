"""The agent as the kernel sees it: a real ``python -m skyward.agent`` on a UNIX socket."""

from __future__ import annotations

import ast
import os
import re
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
from skyward import protocol as P
from skyward import wire
from skyward.lines import LineSink
from skyward.transport.bootstrap import AGENT_MODULES

SOURCE = Path(__file__).resolve().parents[2] / "skyward_jupyter"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


class Client:
    """A bare protocol client: messages in and out, nothing else."""

    def __init__(self, path: str, since: int = 0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.decoder = wire.FrameDecoder(plain=True)
        self.pending: list[dict[str, Any]] = []
        self.count = 0
        self.send(P.Hello(since))
        self.hello = self.recv()
        assert isinstance(self.hello, P.HelloReply)
        self.seqs: list[int] = []

    def send(self, message: P.Message) -> None:
        self.sock.sendall(wire.encode(P.encode(message)))

    def recv(self, timeout: float = 10.0, metrics: bool = False) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            while not self.pending:
                self.sock.settimeout(max(0.001, deadline - time.monotonic()))
                data = self.sock.recv(1 << 20)
                if not data:
                    raise EOFError("agent closed the connection")
                self.pending.extend(self.decoder.feed(data))
            frame = self.pending.pop(0)
            seq = frame.pop("seq", None) if frame["k"] != "hello-reply" else None
            message = P.decode(frame)
            if seq is not None:
                self.seqs.append(seq)
            if metrics or not isinstance(message, P.Metrics | P.WorkerReady):
                return message

    def exec(self, code: str, task: str | None = None, **options: Any) -> str:
        self.count += 1
        task = task or f"t{self.count}"
        self.send(P.Run(task, code, **options))
        return task

    def until_done(self, task: str, timeout: float = 10.0) -> list[Any]:
        frames = []
        while True:
            frame = self.recv(timeout)
            frames.append(frame)
            if isinstance(frame, P.Done | P.Crash) and frame.task == task:
                return frames

    def run(self, code: str, **options: Any) -> tuple[list[tuple[str, str, bool]], Any, Any]:
        """Run a cell: its lines, its result's text (or None) and how it ended."""
        task = self.exec(code, **options)
        frames = self.until_done(task)
        assert frames[0] == P.Started(task)
        lines = [line for f in frames if isinstance(f, P.Lines) for line in f.lines]
        assert all(getattr(f, "task", task) == task for f in frames)
        results = [f.data["text/plain"] for f in frames if isinstance(f, P.Result)]
        return lines, (results[0] if results else None), frames[-1]

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
    assert hello.pid == agent.proc.pid
    assert hello.python == ".".join(map(str, sys.version_info[:3]))
    assert hello.node == 2 and hello.nodes == 4 and hello.cluster == "c-test"
    assert isinstance(hello.cwd, str) and isinstance(hello.seq, int)
    assert agent.startup < 2.0
    assert os.stat(agent.path).st_mode & 0o777 == 0o600


def test_ping(client: Client) -> None:
    client.send(P.Ping(7))
    pong = client.recv()
    assert isinstance(pong, P.Pong) and pong.id == 7 and abs(pong.time - time.time()) < 5


def test_expression_result_and_state(client: Client) -> None:
    assert client.run("1 + 1")[1] == "2"
    lines, result, done = client.run("x = 41")
    assert done.ok and result is None and done.error is None and lines == []
    assert client.run("x + 1")[1] == "42"
    assert client.run("None")[1] is None
    assert client.run("'é' * 3")[1] == "'ééé'"
    assert client.run("x + 1;")[1] is None  # IPython's own rule: ";" hides the value
    assert client.run("list(range(30))")[1].count("\n") == 29  # IPython's pretty printer


def test_out_and_underscores_per_node(client: Client) -> None:
    client.run("6 * 7", count=51)
    assert client.run("_", count=52)[1] == "42"
    assert client.run("Out[51] + _51", count=53)[1] == "84"


def test_output_history_is_ipythons(client: Client) -> None:
    """What a cell printed is in IPython's output history (``%notebook`` exports it), in
    the cell's order, its value last."""
    code = "import sys\nprint('a')\nprint('b', file=sys.stderr)\nprint('c', end='')\n6 * 7"
    client.run(code, count=61)
    read = (
        "[(o.output_type, ''.join(o.bundle['stream']) if 'stream' in o.bundle else"
        " o.bundle['text/plain']) for o in get_ipython().history_manager.outputs[61]]"
    )
    expected = [
        ("out_stream", "a\n"),
        ("err_stream", "b\n"),
        ("out_stream", "c"),
        ("execute_result", "42"),
    ]
    assert ast.literal_eval(client.run(read, count=62)[1]) == expected


def test_magics_and_shell_commands(client: Client) -> None:
    lines, _, done = client.run("!echo from-shell")
    assert done.ok and screen(lines) == [("stdout", "from-shell")]
    assert client.run("x = !echo one; echo two\nx")[1] == "['one', 'two']"
    lines, _, done = client.run("%timeit -n1 -r1 pass")
    assert done.ok and "per loop" in lines[0][1]
    lines, result, done = client.run("%%time\n1 + 2")
    assert done.ok and result == "3" and any("Wall time" in line[1] for line in lines)
    lines, _, done = client.run("%skyward up")
    assert any("runs in the notebook's kernel" in line[1] for line in lines)


def test_display_and_traceback_are_ipythons(client: Client) -> None:
    task = client.exec("from IPython.display import display, HTML\ndisplay(HTML('<b>x</b>'))")
    frames = client.until_done(task)
    shown = [f for f in frames if isinstance(f, P.Display)]
    assert shown[0].data["text/html"] == "<b>x</b>"
    task = client.exec("print('before')\ndef f():\n    return 1 / 0\nf()\n", count=7)
    frames = client.until_done(task)
    assert [type(f) for f in frames] == [P.Started, P.Lines, P.Done]
    assert frames[1].lines == [("stdout", "before", False)]
    error = frames[-1].error
    assert error.ename == "ZeroDivisionError" and error.evalue == "division by zero"
    assert error.builtin and error.module == "builtins"
    text = ANSI.sub("", "".join(error.traceback))
    assert "Cell In[7], line 4" in text and "Cell In[7], line 3, in f" in text
    assert "skyward" not in text and "interactiveshell" not in text
    assert [(f[1], f[2]) for f in error.frames] == [(4, "<module>"), (3, "f")]


def test_environment(client: Client) -> None:
    names = "('SKYWARD_NODE', 'SKYWARD_NODES', 'SKYWARD_CLUSTER')"
    code = f"import os; [os.environ[k] for k in {names}]"
    assert client.run(code)[1] == "['2', '4', 'c-test']"


def test_progress_bar_collapses_to_one_line(client: Client) -> None:
    code = (
        "import time\n"
        "for i in range(50):\n"
        "    print(f'\\rstep {i}', end='')\n"
        "    time.sleep(0.02)\n"
        "print()\n"
    )
    lines, _, done = client.run(code)
    assert done.ok
    assert 2 < len(lines) < 50  # provisional updates were sent, and coalesced
    assert lines[-1] == ("stdout", "step 49", True)
    assert all(overwrite for _, _, overwrite in lines[1:])
    assert screen(lines) == [("stdout", "step 49")]


def test_partial_line_is_sent_before_its_end(client: Client) -> None:
    task = client.exec("import time\nprint('waiting', end='')\ntime.sleep(0.4)\nprint(' done')")
    assert client.recv() == P.Started(task)
    log = client.recv(timeout=0.3)  # long before the cell ends
    assert log == P.Lines(task, [("stdout", "waiting", False)], partial=("stdout",))
    frames = client.until_done(task)
    assert frames[0].lines == [("stdout", "waiting done", True)] and frames[0].partial == ()


def test_stdout_stderr_order_kept(client: Client) -> None:
    code = "import sys\nfor i in range(5):\n    print('o', i)\n    print('e', i, file=sys.stderr)\n"
    lines, _, _ = client.run(code)
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
    lines, _, done = client.run(code)
    assert done.ok
    assert sorted(screen(lines)) == [
        ("stderr", "err"),
        ("stdout", "bytes é"),
        ("stdout", "hi"),
        ("stdout", "raw"),
    ]


def test_forked_child_output_captured(client: Client) -> None:
    code = "import os\nif not (pid := os.fork()):\n    print('child')\n    os._exit(0)\n"
    code += "os.waitpid(pid, 0);"
    lines, _, done = client.run(code)
    assert done.ok and screen(lines) == [("stdout", "child")]


def test_syntax_error_and_system_exit(client: Client) -> None:
    done = client.run("x = (1 +\n")[2]
    assert done.ok is False and done.error.ename == "SyntaxError"
    assert "skyward" not in "".join(done.error.traceback)
    done = client.run("raise SystemExit(3)")[2]
    assert done.error.ename == "SystemExit" and done.error.evalue == "3"
    assert client.run("2 * 21")[1] == "42"


def test_top_level_await(client: Client) -> None:
    code = "import asyncio\nawait asyncio.sleep(0)\nawait asyncio.sleep(0, 'slept')"
    assert client.run(code)[1] == "'slept'"


def test_interrupt(client: Client) -> None:
    client.send(P.Interrupt("nobody"))  # not running: ignored
    task = client.exec("import time\nprint('sleeping')\ntime.sleep(30)")
    assert client.recv() == P.Started(task)
    assert client.recv().lines == [("stdout", "sleeping", False)]
    began = time.monotonic()
    client.send(P.Interrupt(task))
    done = client.until_done(task)[-1]
    assert time.monotonic() - began < 2
    assert done.ok is False and done.error.ename == "KeyboardInterrupt"
    assert "time.sleep(30)" in ANSI.sub("", "".join(done.error.traceback))
    assert client.run("'alive'")[1] == "'alive'"


def test_interrupt_right_after_started_and_while_queued(client: Client) -> None:
    first = client.exec("import time\ntime.sleep(30)")
    queued = client.exec("print('never')")
    assert client.recv() == P.Started(first)
    client.send(P.Interrupt(queued))
    client.send(P.Interrupt(first))  # maybe before its code began
    frames = client.until_done(queued, timeout=3)
    done = [f for f in frames if isinstance(f, P.Done)]
    assert [d.task for d in done] == [first, queued]
    assert all(d.error.ename == "KeyboardInterrupt" for d in done)
    assert not [f for f in frames if isinstance(f, P.Lines)]


def test_kill_ends_a_cell_that_ignores_interrupts(client: Client) -> None:
    code = "import time\nwhile True:\n    try:\n        time.sleep(1)\n"
    code += "    except KeyboardInterrupt:\n        pass"
    task = client.exec(code)
    assert client.recv() == P.Started(task)
    client.send(P.Kill(task))
    crash = client.until_done(task)[-1]
    assert isinstance(crash, P.Crash) and crash.killed and crash.restarted
    assert client.run("'fresh'")[1] == "'fresh'"


def test_cells_queue_in_order(client: Client) -> None:
    tasks = [client.exec(f"import time; time.sleep(0.01); print({i})") for i in range(5)]
    client.seqs.clear()
    frames = client.until_done(tasks[-1])
    assert [(type(f), f.task) for f in frames if not isinstance(f, P.Lines)] == [
        (k, t) for t in tasks for k in (P.Started, P.Done)
    ]
    assert client.seqs == list(range(client.seqs[0], client.seqs[0] + len(client.seqs)))


def test_hundred_thousand_lines(client: Client) -> None:
    lines, _, done = client.run("for i in range(100000): print(i)")
    assert done.ok
    assert lines == [("stdout", str(i), False) for i in range(100000)]


def test_megabyte_line_and_unicode(client: Client) -> None:
    lines, _, done = client.run("print('é' + 'x' * (1 << 20) + '→'); print('日本語 🚀')")
    assert done.ok
    assert screen(lines) == [
        ("stdout", "é" + "x" * (1 << 20) + "→"),
        ("stdout", "日本語 🚀"),
    ]


def test_output_past_the_budget_is_cut_and_counted(client: Client) -> None:
    task = client.exec("for i in range(1000): print('x' * 99)", max_output=10_000)
    frames = client.until_done(task)
    shown = [
        line for f in frames if isinstance(f, P.Lines) and not f.panel_only for line in f.lines
    ]
    tail = [line for f in frames if isinstance(f, P.Lines) and f.panel_only for line in f.lines]
    assert sum(len(line[1]) + 1 for line in shown) <= 10_000
    assert frames[-1].dropped == 100_000 - sum(len(line[1]) + 1 for line in shown)
    assert 0 < len(tail) <= 200 and tail[-1] == ("stdout", "x" * 99, False)


def test_output_after_the_cell_belongs_to_no_cell(client: Client) -> None:
    code = "import threading, time\n"
    code += "threading.Thread(target=lambda: (time.sleep(0.3), print('late'))).start()"
    task = client.run(code)[2].task
    late = client.recv(timeout=3)
    assert late == P.Lines(None, [("stdout", "late", False)], after=task)
    lines, result, _ = client.run("'next'")
    assert lines == [] and result == "'next'"


@pytest.mark.parametrize(
    ("code", "status", "signame"),
    [
        ("import os\nprint('last words', flush=True)\nos._exit(3)", 3, ""),
        (
            "import os, signal\nprint('last words', flush=True)\n"
            "os.kill(os.getpid(), signal.SIGSEGV)",
            None,
            "SIGSEGV",
        ),
    ],
)
def test_a_dying_worker_is_reported_with_its_last_output(
    fresh: AgentProcess, code: str, status: int | None, signame: str
) -> None:
    c = fresh.client()
    c.run("x = 1")
    began = time.monotonic()
    lines, _, crash = c.run(code)
    assert time.monotonic() - began < 2
    assert isinstance(crash, P.Crash) and crash.status == status and crash.signame == signame
    assert ("stdout", "last words", False) in lines and crash.restarted and not crash.oom
    assert fresh.proc.poll() is None  # the supervisor is fine
    assert c.run("'x' in globals()")[1] == "False"  # a fresh worker: its variables are gone
    c.close()


@pytest.mark.skipif(
    os.geteuid() != 0 or not os.access("/sys/fs/cgroup/memory", os.W_OK),
    reason="needs root and a writable cgroup v1 memory controller to cap the worker",
)
def test_the_oom_killer_is_named(fresh: AgentProcess, tmp_path: Path) -> None:
    c = fresh.client()
    c.run("x = 1")
    pid = int(c.run("import os; os.getpid()")[1])
    group = Path(f"/sys/fs/cgroup/memory/skyward-test-{os.getpid()}")
    group.mkdir()
    try:
        (group / "memory.limit_in_bytes").write_text(str(200 << 20))
        (group / "memory.memsw.limit_in_bytes").write_text(str(200 << 20))
        (group / "cgroup.procs").write_text(str(pid))
        _, _, crash = c.run("hog = bytearray(1 << 30)\nhog[::4096] = b'x' * len(hog[::4096])")
        assert isinstance(crash, P.Crash) and crash.oom and crash.signame == "SIGKILL"
        assert "OOM" in crash.detail
    finally:
        for leftover in (group / "cgroup.procs").read_text().split():
            Path("/sys/fs/cgroup/memory/cgroup.procs").write_text(leftover)
        group.rmdir()
    c.close()


def _gone(pid: int) -> bool:
    """Whether ``pid`` has exited (a zombie nobody reaps counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_a_killed_supervisor_takes_its_worker_and_the_running_cell(fresh: AgentProcess) -> None:
    c = fresh.client()
    pid = int(c.run("import os\nos.getpid()")[1])
    task = c.exec("while True:\n    pass")  # a cell that never ends by itself
    assert c.recv() == P.Started(task)
    fresh.proc.kill()  # SIGKILL: the supervisor cannot stop its worker itself
    fresh.proc.wait()
    deadline = time.monotonic() + 5
    while not _gone(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _gone(pid), "the worker outlived its supervisor, running user code unsupervised"
    c.close()


def test_new_connection_replaces_old(agent: AgentProcess, client: Client) -> None:
    newer = agent.client(since=1 << 62)
    try:
        with pytest.raises((EOFError, OSError)):
            client.recv(timeout=2)
        assert newer.run("'still here'")[1] == "'still here'"
    finally:
        newer.close()


def test_reconnect_replays_exactly_what_was_missed(fresh: AgentProcess) -> None:
    first = fresh.client()
    first.run("print('one')")
    task = first.exec("import time\nfor i in range(3):\n    print(i)\n    time.sleep(0.1)\n")
    first.seqs.clear()
    seen = first.until_done(task)
    missed, since = seen[2:], first.seqs[1]
    first.close()
    late = fresh.client(since=since)
    assert late.hello.seq == first.seqs[-1]
    assert [late.recv() for _ in missed] == missed
    # output produced while nobody listens is kept too
    task = late.exec("import time\ntime.sleep(0.2)\nprint('alone')")
    assert late.recv() == P.Started(task)
    since = late.seqs[-1]
    late.close()
    time.sleep(0.5)
    again = fresh.client(since=since)
    frames = [again.recv(), again.recv()]
    assert frames[0].lines == [("stdout", "alone", False)]
    assert isinstance(frames[1], P.Done) and frames[1].task == task
    assert again.seqs == [since + 1, since + 2]
    again.close()


def test_shutdown(fresh: AgentProcess) -> None:
    c = fresh.client()
    c.send(P.Shutdown())
    assert c.recv() == P.Bye()
    assert fresh.proc.wait(timeout=8) == 0
    assert not os.path.exists(fresh.path)
    c.close()


def test_shutdown_interrupts_a_running_cell(fresh: AgentProcess) -> None:
    c = fresh.client()
    task = c.exec("import time\ntime.sleep(30)")
    assert c.recv() == P.Started(task)
    c.send(P.Shutdown())
    assert c.recv() == P.Bye()
    assert fresh.proc.wait(timeout=8) == 0
    c.close()


def test_socket_path_longer_than_an_address_holds() -> None:
    deep = os.path.join("h" * 60, ".skyward" + "x" * 60)
    process = AgentProcess(folder=deep)
    try:
        assert len(process.path) > 108
        short = os.path.join(process.dir, "s")
        os.symlink(os.path.dirname(process.path), short)
        c = Client(os.path.join(short, "agent.sock"))
        assert c.run("6 * 7")[1] == "42"
        assert c.run("import os; os.getcwd()")[1] == repr(os.getcwd())
        c.close()
    finally:
        process.stop()


UPLOADED = AGENT_MODULES  # exactly what the bootstrap uploads


def test_runs_from_the_uploaded_files_alone(tmp_path: Path) -> None:
    """On an instance only these files of ours exist (IPython and cloudpickle are
    installed by the bootstrap, as the kernel's venv has them here)."""
    package = tmp_path / "lib" / "skyward"
    for name in UPLOADED:
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(SOURCE / "skyward" / name, package / name)
    path = str(tmp_path / "run" / "agent.sock")  # the agent creates run/
    process = subprocess.Popen(
        [sys.executable, "-m", "skyward.agent", "--socket", path],
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
        code = "import skyward, skyward.agent.worker as w; (skyward.__file__, w.__file__)"
        expected = (str(package / "__init__.py"), str(package / "agent" / "worker.py"))
        assert ast.literal_eval(c.run(code)[1]) == expected
        c.send(P.Shutdown())
        assert c.recv() == P.Bye()
        assert process.wait(timeout=8) == 0
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
            assert c.hello.pid == second.pid
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
    time.sleep(0.05)  # an unfinished line is shown once it has waited UNFINISHED_DELAY
    assert feed(sink, ("stdout", "")) == [("stdout", "line", False)]
    expected = [("stdout", "line", True), ("stdout", "next", False)]
    assert feed(sink, ("stdout", "\nnext\n")) == expected
    # a reset with nothing after it keeps the old text on screen until replaced
    assert feed(sink, ("stdout", "50%\r")) == []
    time.sleep(0.05)
    assert feed(sink, ("stdout", "")) == [("stdout", "50%", False)]
    assert feed(sink, ("stdout", "100%\r\n")) == [("stdout", "100%", True)]


def test_line_sink_reports_unfinished_lines() -> None:
    sink = LineSink()
    assert feed(sink, ("stdout", "done\nhalf"), ("stderr", "e\n")) == [
        ("stdout", "done", False),
        ("stderr", "e", False),
    ]
    time.sleep(0.05)
    assert feed(sink) == [("stdout", "half", False)] and sink.partial == ("stdout",)
    assert feed(sink, ("stdout", "!\n")) == [("stdout", "half!", True)] and sink.partial == ()


def test_line_sink_streams_and_cell_end() -> None:
    sink = LineSink()
    lines = feed(sink, ("stdout", "par"), ("stderr", "e1\n"), ("stdout", "tial"), end=True)
    assert lines == [("stderr", "e1", False), ("stdout", "partial", False)]
    # the cell ended: the next cell's first line does not replace the partial one
    assert feed(sink, ("stdout", "x\n")) == [("stdout", "x", False)]
    assert feed(sink, ("stdout", "\r\r\n\n")) == [("stdout", "", False), ("stdout", "", False)]
