"""One worker process as the supervisor sees it: its pipes, and how it died.

The worker runs in its own process group with five pipes: commands in (cells and
settings for its main thread, interrupts for its control thread), messages out, and its
file descriptors 1 and 2 (so subprocesses and C code are captured too). Each read
side has a thread; when the process ends, ``wait`` collects every byte it wrote and says
how it ended: an exit status, a signal, or the kernel's OOM killer (read from the memory
cgroup's counters where readable). Standard library only.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from .. import protocol, wire

__all__ = ["WorkerProcess", "describe_exit"]

TAIL_CHARS = 4000  # characters of the worker's stderr kept for a crash report


def _memory_cgroup(pid: int) -> str | None:
    """The file holding the OOM-kill counter of ``pid``'s memory cgroup (v2, else v1)."""
    try:
        with open(f"/proc/{pid}/cgroup") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return None
    for line in lines:
        number, controllers, path = line.split(":", 2)
        if number == "0" and os.path.exists(f"/sys/fs/cgroup{path}/memory.events"):
            return f"/sys/fs/cgroup{path}/memory.events"
        if "memory" in controllers.split(","):
            candidate = f"/sys/fs/cgroup/memory{path}/memory.oom_control"
            if os.path.exists(candidate):
                return candidate
    return None


def _oom_kills(path: str | None) -> int | None:
    if path is None:
        return None
    try:
        with open(path) as handle:
            for line in handle:
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
    except (OSError, ValueError):
        return None
    return None


def describe_exit(returncode: int, oom: bool, killed: bool) -> tuple[int | None, int | None, str]:
    """``(status, signal, words)`` for a worker's return code."""
    if returncode >= 0:
        return returncode, None, f"the cell's process exited with status {returncode}"
    number = -returncode
    try:
        name = signal.Signals(number).name
    except ValueError:
        name = f"signal {number}"
    if killed:
        return None, number, "the cell's process was killed: the cell did not stop"
    if oom:
        return None, number, "the cell's process was killed by the kernel's OOM killer"
    return None, number, f"the cell's process was killed by {name}"


class WorkerProcess:
    """Starts a worker and pumps its pipes into the supervisor's callbacks."""

    def __init__(
        self,
        on_message: Callable[[protocol.Message], None],
        on_output: Callable[[str, str], None],
        on_exit: Callable[[WorkerProcess], None],
    ) -> None:
        self._on_message, self._on_output, self._on_exit = on_message, on_output, on_exit
        self.ready = False
        self.killed = False
        self.started_at = time.monotonic()
        self.stderr_tail: deque[str] = deque()
        self._tail_size = 0
        self._pump_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._oom_file: str | None = None
        self._oom_count: int | None = None
        commands_r, self._commands = os.pipe()
        control_r, self._control = os.pipe()
        self._events, events_w = os.pipe()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "skyward.agent.worker", "--commands", str(commands_r)]
            + ["--control", str(control_r), "--events", str(events_w)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            pass_fds=(commands_r, control_r, events_w),
            start_new_session=True,
        )
        for fd in (commands_r, control_r, events_w):
            os.close(fd)
        self.pid = self.process.pid
        assert self.process.stdout is not None and self.process.stderr is not None
        self._fds = {self.process.stdout.fileno(): "stdout", self.process.stderr.fileno(): "stderr"}
        for fd in self._fds:
            os.set_blocking(fd, False)
        self.watch_memory()
        self._reader = threading.Thread(target=self._read_events, daemon=True)
        self._reader.start()
        threading.Thread(target=self._pump, daemon=True).start()
        threading.Thread(target=self._wait, daemon=True).start()

    def send(self, message: protocol.Message) -> bool:
        """Hand ``message`` to the worker (an interrupt on the pipe its control thread
        reads, the rest on its main thread's); False if it is gone."""
        data = wire.encode(protocol.encode(message))
        fd = self._control if isinstance(message, protocol.Interrupt) else self._commands
        try:
            with self._write_lock:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
        except OSError:
            return False
        return True

    def watch_memory(self) -> None:
        """Note the worker's memory cgroup and its OOM-kill count (it may have moved)."""
        self._oom_file = _memory_cgroup(self.pid)
        self._oom_count = _oom_kills(self._oom_file)

    def kill(self) -> None:
        """SIGKILL the worker and whatever it started (its process group)."""
        self.killed = True
        self._signal_group(signal.SIGKILL)

    def interrupt_group(self) -> None:
        self._signal_group(signal.SIGINT)

    def _signal_group(self, signum: int) -> None:
        try:
            os.killpg(self.pid, signum)
        except OSError:
            pass

    def drain(self) -> None:
        """Move what is already in the output pipes to ``on_output`` (before a "done")."""
        with self._pump_lock:
            self._read(list(self._fds))

    # -- threads

    def _read_events(self) -> None:
        for frame in wire.read_frames(self._events):
            self._on_message(protocol.decode(frame))

    def _pump(self) -> None:
        fds = list(self._fds)
        while fds:
            try:
                ready, _, _ = select.select(fds, [], [], 1.0)
            except (OSError, ValueError):
                return
            with self._pump_lock:
                closed = self._read(ready)
            fds = [fd for fd in fds if fd not in closed]

    def _read(self, fds: list[int]) -> set[int]:
        closed = set()
        for fd in fds:
            name = self._fds[fd]
            while True:
                try:
                    data = os.read(fd, 1 << 16)
                except BlockingIOError:
                    break
                except OSError:
                    data = b""
                if not data:
                    closed.add(fd)
                    break
                text = data.decode("utf-8", "replace")
                if name == "stderr":
                    self.note_stderr(text)
                self._on_output(name, text)
        return closed

    def note_stderr(self, text: str) -> None:
        """Keep the end of what the worker wrote to stderr (any layer), for a crash."""
        self.stderr_tail.append(text)
        self._tail_size += len(text)
        while self._tail_size > TAIL_CHARS and len(self.stderr_tail) > 1:
            self._tail_size -= len(self.stderr_tail.popleft())

    def _wait(self) -> None:
        self.process.wait()
        self._signal_group(signal.SIGKILL)  # what the dead worker started goes with it
        self._reader.join(2.0)
        self.drain()
        self._on_exit(self)

    # -- after death

    @property
    def returncode(self) -> int:
        return self.process.returncode if self.process.returncode is not None else 0

    def oom_killed(self) -> bool:
        """Whether the kernel's OOM killer ended the worker (its cgroup counted a kill)."""
        if self.returncode != -signal.SIGKILL or self.killed:
            return False
        after = _oom_kills(self._oom_file)
        return after is not None and self._oom_count is not None and after > self._oom_count

    def stderr_text(self) -> str:
        return "".join(self.stderr_tail)[-TAIL_CHARS:]

    def close(self) -> None:
        for fd in (self._commands, self._control, self._events):
            try:
                os.close(fd)
            except OSError:
                pass

    def info(self) -> dict[str, Any]:
        return {"pid": self.pid, "ready": self.ready}
