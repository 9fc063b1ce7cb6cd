"""The bootstrap: prepare an instance for work, in phases, over SSH.

Phases: ``python`` (an interpreter with the kernel's major.minor, ``uv``, and a venv),
``sync`` (the kernel's own packages at its versions, best effort: see ``package_sync``),
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
import re
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
from ..secrets import mask_url_credentials
from .agent_client import AgentClient
from .agents import Agents
from .environment import GPU_STACK, describe_environment
from .hostkey import ROTATE_SCRIPT, confirm_host_key
from .package_sync import NETWORK_ERROR, UV_OPTIONS, SyncReport, install_pins
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
    "messages.py",
    "lines.py",
    "agent/__init__.py",
    "agent/__main__.py",
    "agent/code.py",
    "agent/history.py",
    "agent/blob_service.py",
    "agent/blobs.py",
    "agent/budget.py",
    "agent/listener.py",
    "agent/outbox.py",
    "agent/process.py",
    "agent/relay.py",
    "agent/sampler.py",
    "agent/supervisor.py",
    "agent/watchdog.py",
    "agent/streams.py",
    "agent/shell.py",
    "agent/worker.py",
    "agent/variables.py",
)


def _requirement_name(text: str) -> str:
    from packaging.utils import canonicalize_name

    return canonicalize_name(re.split(r"[=<>!~@ ;\[]", text.strip(), maxsplit=1)[0])


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

    def __init__(self, bus: EventBus, registry: Registry, agents: Agents | None = None) -> None:
        self.bus = bus
        self.registry = registry
        self.agents = agents if agents is not None else Agents(bus)
        self._connections: dict[str, Any] = {}  # of nodes being bootstrapped
        self.on_host_key: Callable[[Any, str], None] | None = None
        """Told when a node's host key was rotated (the ledger records the new one)."""
        self.sync_reports: dict[str, SyncReport] = {}
        self.left_behind: list[str] = []
        bus.subscribe(BootstrapRequested, self._on_bootstrap_requested)
        bus.subscribe(InstanceDestroyed, self._on_destroyed)

    async def _on_destroyed(self, event: InstanceDestroyed) -> None:
        await self.disconnect(event.instance_id)

    async def disconnect(self, instance_id: str) -> None:
        """Close the agent channel and SSH connection of an instance."""
        connection = self._connections.pop(instance_id, None)
        if connection is not None:
            connection.close()
        await self.agents.disconnect(instance_id)

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
            connection = await self._phase(node, phase, lambda: self._connect(node, record))
            self._connections[node.instance.id] = connection
            phase = "python"
            paths = await self._phase(
                node, phase, lambda: self._python(connection, node, spec.python, spec.interpreter)
            )
            home, uv = paths["SKYWARD_HOME"], paths["SKYWARD_UV"]
            if spec.sync_packages:
                phase = "sync"
                report = await self._phase(
                    node, phase, lambda: self._sync(connection, node, uv, spec, paths)
                )
                self.sync_reports[node.instance.id] = report
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
        self._connections.pop(node.instance.id, None)
        self.agents.add(connection, agent)
        respond(self.bus, request, InstanceBootstrapped(node))

    async def _connect(self, node: NodeInstance, record: Any) -> Any:
        """Connect with the launch-time host key, then retire it (``hostkey``)."""
        connection = await connect(node, record.host_public_key, timeout=120.0)
        try:
            out = await self._run(connection, node, ROTATE_SCRIPT, shown="rotate the host key")
            rotated = next(
                line.removeprefix("SKYWARD_HOST_KEY=")
                for line in out.splitlines()
                if line.startswith("SKYWARD_HOST_KEY=")
            )
            await confirm_host_key(node, rotated)
        except (PhaseFailed, StopIteration, SkywardError, ValueError) as exc:
            reason = getattr(exc, "output", "") or str(exc) or "no new key printed"
            self.bus.publish(
                ConsoleOutput(
                    node,
                    f"host key not rotated ({reason.strip()}): still pinned "
                    "to the key handed over at launch",
                    "stderr",
                )
            )
            return connection
        record.host_public_key = rotated
        if self.on_host_key is not None:
            self.on_host_key(record, rotated)
        return connection

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
            for stream, text, overwrite in sink.take(end):
                line = mask_url_credentials(text) if "://" in text else text
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

    async def _python(
        self, connection: Any, node: NodeInstance, wanted: str, interpreter: str = ""
    ) -> dict[str, str]:
        """Find the interpreter, uv and the venv; returns what the script learnt
        (``SKYWARD_HOME``, ``SKYWARD_UV``, ``SKYWARD_GPUS``, ``SKYWARD_BASE_TORCH``)."""
        want = wanted or "{}.{}".format(*sys.version_info[:2])
        script = f"WANT={shlex.quote(want)}\n"
        if interpreter:
            script += f"PYTHON={shlex.quote(interpreter)}\n"
        script += PYTHON_ENV_SCRIPT
        out = await self._run(connection, node, script, shown=f"find python {want}; make venv")
        found = dict(line.split("=", 1) for line in out.splitlines() if line.startswith("SKYWARD_"))
        if "SKYWARD_HOME" not in found or "SKYWARD_UV" not in found:
            raise PhaseFailed("could not learn the instance's home directory", out[-2000:])
        return found

    def _say(self, node: NodeInstance, text: str) -> None:
        self.bus.publish(ConsoleOutput(node, text, "stdout"))

    async def _sync(
        self, connection: Any, node: NodeInstance, uv: str, spec: Any, found: dict[str, str]
    ) -> SyncReport:
        """Install the kernel's packages at its versions; what cannot be is skipped."""
        gpus = spec.accelerator_count > 0 or found.get("SKYWARD_GPUS", "0") not in ("", "0")
        exclude = tuple(_requirement_name(p) for p in spec.pip)
        env = await asyncio.to_thread(describe_environment, gpus, exclude)
        self.left_behind = env.left_behind
        pins = env.pins
        kept = ""
        if gpus and found.get("SKYWARD_BASE_TORCH"):
            pins = [p for p in pins if _requirement_name(p) not in GPU_STACK]
            kept = f"; the node's own torch {found['SKYWARD_BASE_TORCH']} is kept"
        self._say(
            node,
            f"package sync: resolving {len(pins)} packages of the kernel "
            f"({len(env.left_behind)} frontend-only left behind{kept})",
        )

        async def run(command: str, shown: str, stdin: bytes | None) -> str:
            return await self._run(connection, node, command, shown=shown, stdin=stdin)

        backend = "auto" if gpus and not kept else ""
        report = await install_pins(run, shlex.quote(uv), pins, backend)
        report.skipped[:0] = [(f"{s.name}=={s.version}", s.reason) for s in env.skipped]
        where = " from uv's cache (the index failed)" if report.offline else ""
        self._say(
            node,
            f"package sync: {report.installed} of {len(pins)} installed{where} in "
            f"{report.seconds:.1f} s; {len(report.skipped)} skipped",
        )
        return report

    async def _packages(
        self, connection: Any, node: NodeInstance, uv: str, packages: list[str]
    ) -> None:
        wanted = " ".join(shlex.quote(p) for p in packages)
        command = (
            f"cd ~ && {shlex.quote(uv)} pip install --python .skyward/venv/bin/python "
            f"{UV_OPTIONS} @MODE@{wanted} && mkdir -p .skyward/code && "
            ".skyward/venv/bin/python -c 'import sysconfig; print(sysconfig.get_path(\"purelib\"))'"
            ' | { read -r d; echo "$HOME/.skyward/code" > "$d/skyward-code.pth"; }'
        )
        shown = f"uv pip install {mask_url_credentials(' '.join(packages))}"
        try:
            await self._run(connection, node, command.replace("@MODE@", ""), shown=shown)
        except PhaseFailed as exc:
            if not NETWORK_ERROR.search(exc.output):
                raise
            self._say(node, "the package index failed: installing from uv's cache alone")
            await self._run(
                connection,
                node,
                command.replace("@MODE@", "--offline "),
                shown=shown + " --offline",
            )

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
        socket_path = f"{home}/.skyward/agent.sock"
        args = (
            f"--socket {shlex.quote(socket_path)} --node {node.node} "
            f"--nodes {spec.nodes} --cluster {shlex.quote(cluster_id)} "
            f"--grace {spec.grace:g} --on-orphan {shlex.quote(orphan)}"
        )
        start = (
            "cd ~\n"
            "if [ -f .skyward/agent.pid ]; then kill $(cat .skyward/agent.pid) 2>/dev/null; fi\n"
            "rm -f .skyward/agent.sock\n"
            "@LAUNCHER@ env PYTHONPATH=$HOME/.skyward/lib nohup .skyward/venv/bin/python "
            f"-m skyward.agent {args} > .skyward/agent.log 2>&1 < /dev/null &\n"
            "echo $! > .skyward/agent.pid"
        )
        launcher = "$(command -v setsid || true)"
        await self._run(
            connection,
            node,
            start.replace("@LAUNCHER@", launcher),
            shown="start agent: " + start.replace("@LAUNCHER@", "setsid"),
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
