"""The bootstrap: prepare an instance for work, in phases, over SSH.

Phases: ``python`` (an interpreter with the kernel's major.minor, ``uv``, and a venv),
``packages`` (IPython and cloudpickle at the kernel's versions, for the worker, and
``--pip``), ``agent`` (upload and start the agent, open its channel, wait for its
worker). Each phase emits ``BootstrapPhase`` started/completed/failed with its elapsed
time, each command a ``BootstrapCommand`` and its output ``ConsoleOutput``. A failing
phase gives ``BootstrapFailed`` with the tail of the command's output.
"""

from __future__ import annotations

import asyncio
import codecs
import io
import shlex
import sys
import tarfile
import time
from collections import deque
from collections.abc import Awaitable, Callable
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

from ..core.bus import EventBus, respond
from ..core.registry import Registry
from ..errors import SkywardError
from ..events import (
    BootstrapCommand,
    BootstrapFailed,
    BootstrapPhase,
    BootstrapRequested,
    ConsoleOutput,
    InstanceBootstrapped,
    InstanceDestroyed,
    NodeInstance,
)
from ..lines import LineSink
from .agent_client import AgentClient
from .packages import worker_requirements
from .ssh import connect

__all__ = ["Bootstrapper", "agent_bundle"]

T = TypeVar("T")
TAIL_LINES = 30
PYTHON_ENV_SCRIPT = (Path(__file__).parent / "python_env.sh").read_text()
AGENT_MODULES = (
    "__init__.py",
    "events.py",
    "model.py",
    "remote.py",
    "wire.py",
    "protocol.py",
    "lines.py",
    "agent/__init__.py",
    "agent/__main__.py",
    "agent/blobs.py",
    "agent/outbox.py",
    "agent/process.py",
    "agent/relay.py",
    "agent/sampler.py",
    "agent/supervisor.py",
    "agent/streams.py",
    "agent/shell.py",
    "agent/worker.py",
)


class PhaseFailed(SkywardError):
    """A bootstrap command failed; ``output`` is the tail of what it printed."""

    def __init__(self, message: str, output: str = "") -> None:
        super().__init__(message)
        self.output = output


# A VM powers off; in a container (RunPod, Vast) `shutdown` is absent or inert, and ending
# the container's first process stops it.
DEFAULT_ORPHAN_COMMAND = "sudo -n shutdown -h now || shutdown -h now || kill -TERM 1"


def _orphan_command(cluster: Any) -> str:
    """How an instance of this provider shuts itself down when its kernel is gone."""
    return getattr(cluster.provider, "orphan_command", "") or DEFAULT_ORPHAN_COMMAND


@cache
def agent_bundle() -> bytes:
    """A gzipped tar of the agent's modules, as uploaded to instances."""
    package = Path(__file__).resolve().parent.parent
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name in AGENT_MODULES:
            tar.add(package / name, arcname=f"skyward/{name}")
    return buffer.getvalue()


class Bootstrapper:
    """Answers ``BootstrapRequested``; keeps each bootstrapped node's agent client."""

    def __init__(self, bus: EventBus, registry: Registry) -> None:
        self.bus = bus
        self.registry = registry
        self.agents: dict[str, AgentClient] = {}
        self.connections: dict[str, Any] = {}
        bus.subscribe(BootstrapRequested, self._on_bootstrap_requested)
        bus.subscribe(InstanceDestroyed, self._on_destroyed)

    async def _on_destroyed(self, event: InstanceDestroyed) -> None:
        await self.disconnect(event.instance_id)

    async def disconnect(self, instance_id: str) -> None:
        """Close the agent channel and SSH connection of an instance."""
        agent = self.agents.pop(instance_id, None)
        if agent is not None:
            await agent.aclose()
        connection = self.connections.pop(instance_id, None)
        if connection is not None:
            connection.close()

    async def _on_bootstrap_requested(self, request: BootstrapRequested) -> None:
        node = request.instance
        found = self.registry.instance(node.instance.id)
        if found is None:
            respond(self.bus, request, BootstrapFailed(node, "connect", "unknown instance"))
            return
        cluster, record = found
        spec = cluster.spec
        phase = "connect"
        try:
            connection = await self._phase(
                node, phase, lambda: connect(node, record.host_public_key, timeout=120.0)
            )
            self.connections[node.instance.id] = connection
            phase = "python"
            home, uv = await self._phase(
                node, phase, lambda: self._python(connection, node, spec.python)
            )
            phase = "packages"
            wanted = [*worker_requirements(), *spec.pip]
            await self._phase(node, phase, lambda: self._packages(connection, node, uv, wanted))
            phase = "agent"
            agent = await self._phase(
                node,
                phase,
                lambda: self._agent(
                    connection, node, home, cluster.id, spec, _orphan_command(cluster)
                ),
            )
        except asyncio.CancelledError:
            await self.disconnect(node.instance.id)
            raise
        except Exception as exc:
            await self.disconnect(node.instance.id)
            output = getattr(exc, "output", "")
            message = str(exc) or type(exc).__name__
            error = f"{message}\n{output}" if output else message
            respond(self.bus, request, BootstrapFailed(node, phase, error))
            return
        self.agents[node.instance.id] = agent
        respond(self.bus, request, InstanceBootstrapped(node))

    async def _phase(self, node: NodeInstance, name: str, body: Callable[[], Awaitable[T]]) -> T:
        self.bus.publish(BootstrapPhase(node, "started", name))
        start = time.monotonic()
        try:
            result = await body()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            elapsed = time.monotonic() - start
            self.bus.publish(BootstrapPhase(node, "failed", name, elapsed, str(exc)))
            raise
        self.bus.publish(BootstrapPhase(node, "completed", name, time.monotonic() - start))
        return result

    async def _run(
        self,
        connection: Any,
        node: NodeInstance,
        command: str,
        shown: str | None = None,
        stdin: bytes | None = None,
    ) -> str:
        """Run one command, streaming its output as ConsoleOutput; return its stdout."""
        self.bus.publish(BootstrapCommand(node, shown or command))
        tail: deque[str] = deque(maxlen=TAIL_LINES)
        stdout: list[str] = []
        sink = LineSink()

        def emit(end: bool = False) -> None:
            for stream, line, overwrite in sink.take(end):
                if overwrite and tail:
                    tail.pop()
                tail.append(line)
                self.bus.publish(ConsoleOutput(node, line, stream, overwrite))  # type: ignore[arg-type]

        process = await connection.create_process(command, encoding=None)
        if stdin is not None:
            process.stdin.write(stdin)
        process.stdin.write_eof()

        async def pump(source: Any, stream: str) -> None:
            decoder = codecs.getincrementaldecoder("utf-8")("replace")
            while chunk := await source.read(1 << 16):
                text = decoder.decode(chunk)
                if stream == "stdout":
                    stdout.append(text)
                sink.put((stream, text))
                emit()

        await asyncio.gather(pump(process.stdout, "stdout"), pump(process.stderr, "stderr"))
        emit(end=True)
        result = await process.wait()
        if result.exit_status != 0:
            status = result.exit_status if result.exit_status is not None else result.exit_signal
            raise PhaseFailed(f"command exited with status {status}", "\n".join(tail))
        return "".join(stdout)

    async def _python(self, connection: Any, node: NodeInstance, wanted: str) -> tuple[str, str]:
        """Find the interpreter, uv and the venv; returns (home, path of uv)."""
        want = wanted or "{}.{}".format(*sys.version_info[:2])
        script = f"WANT={shlex.quote(want)}\n" + PYTHON_ENV_SCRIPT
        out = await self._run(connection, node, script, shown=f"find python {want}; make venv")
        found = dict(line.split("=", 1) for line in out.splitlines() if line.startswith("SKYWARD_"))
        if "SKYWARD_HOME" not in found or "SKYWARD_UV" not in found:
            raise PhaseFailed("could not learn the instance's home directory", out[-2000:])
        return found["SKYWARD_HOME"], found["SKYWARD_UV"]

    async def _packages(
        self, connection: Any, node: NodeInstance, uv: str, packages: list[str]
    ) -> None:
        wanted = " ".join(shlex.quote(p) for p in packages)
        command = (
            f"cd ~ && {shlex.quote(uv)} pip install --python .skyward/venv/bin/python {wanted}"
        )
        await self._run(connection, node, command, shown=f"uv pip install {' '.join(packages)}")

    async def _agent(
        self,
        connection: Any,
        node: NodeInstance,
        home: str,
        cluster_id: str,
        spec: Any,
        orphan: str,
    ) -> AgentClient:
        await self._run(
            connection,
            node,
            "cd ~ && mkdir -p .skyward/lib && rm -rf .skyward/lib/skyward"
            " && tar -xzf - -C .skyward/lib",
            shown="upload agent to ~/.skyward/lib",
            stdin=agent_bundle(),
        )
        return await self._start_agent(connection, node, home, cluster_id, spec, orphan)

    async def attach(self, node: NodeInstance, host_public_key: str, cluster: Any) -> AgentClient:
        """Take over the running agent of an instance another kernel bootstrapped."""
        iid = node.instance.id
        connection = await connect(node, host_public_key, timeout=60.0)
        self.connections[iid] = connection
        result = await connection.run("cd ~ && echo $HOME", check=True)
        home = str(result.stdout).strip()
        agent = AgentClient(self.bus, node, connection, f"{home}/.skyward/agent.sock")
        agent.last_seq = 1 << 62  # only what happens from now on: no replay of old cells
        await agent.open(timeout=20.0)
        self.agents[iid] = agent
        return agent

    async def _start_agent(
        self,
        connection: Any,
        node: NodeInstance,
        home: str,
        cluster_id: str,
        spec: Any,
        orphan: str,
    ) -> AgentClient:
        socket_path = f"{home}/.skyward/agent.sock"
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in spec.env)
        shown_env = " ".join(f"{k}=***" for k, _ in spec.env)
        args = (
            f"--socket {shlex.quote(socket_path)} --node {node.node} "
            f"--nodes {spec.nodes} --cluster {shlex.quote(cluster_id)} "
            f"--grace {spec.grace:g} --on-orphan {shlex.quote(orphan)}"
        )
        start = (
            "cd ~\n"
            "if [ -f .skyward/agent.pid ]; then kill $(cat .skyward/agent.pid) 2>/dev/null; fi\n"
            "rm -f .skyward/agent.sock\n"
            "@LAUNCHER@ env @ENV@ PYTHONPATH=$HOME/.skyward/lib nohup .skyward/venv/bin/python "
            f"-m skyward.agent {args} > .skyward/agent.log 2>&1 < /dev/null &\n"
            "echo $! > .skyward/agent.pid"
        )
        launcher = "$(command -v setsid || true)"
        await self._run(
            connection,
            node,
            start.replace("@LAUNCHER@", launcher).replace("@ENV@", env),
            shown="start agent: "
            + start.replace("@LAUNCHER@", "setsid").replace("@ENV@", shown_env),
        )
        agent = AgentClient(self.bus, node, connection, socket_path)
        try:
            await agent.open(timeout=20.0)
            await agent.worker_ready(timeout=60.0)
        except Exception as exc:
            log_tail = await self._run(
                connection,
                node,
                "tail -n 20 ~/.skyward/agent.log 2>/dev/null; true",
                shown="tail ~/.skyward/agent.log",
            )
            await agent.aclose()
            raise PhaseFailed(str(exc), log_tail) from exc
        return agent
