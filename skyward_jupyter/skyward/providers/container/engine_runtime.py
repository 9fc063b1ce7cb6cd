"""The engine runtime: each node is a Docker or Podman container running sshd.

Everything goes through the engine's CLI in asyncio subprocesses, so the loop never blocks.
Containers are labelled with the cluster, node and instance, so that leftovers can always
be found and removed, even by a later session. The container is the unit: killing it kills
everything in it, so no process marker is needed here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ...core.private_files import private_dir
from ...core.provider import InstanceState, StatusReport, first
from ...errors import ProvisionError
from ...model import Instance
from .common import NodeCluster, local_offer, own, remove_tree, safe_name

if TYPE_CHECKING:
    from ...core.provider import ClusterKeys, LaunchRequest, ResourceNote, Resources
    from ...model import ClusterSpec

__all__ = ["DEFAULT_IMAGE", "EngineCluster", "EngineRuntime"]

PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"
DEFAULT_IMAGE = f"skyward-node:py{PYTHON}"
"""Built on first use from :data:`DOCKERFILE` when missing (needs a reachable registry)."""

DOCKERFILE = f"""\
FROM python:{PYTHON}-slim
RUN apt-get update \\
 && apt-get install -y --no-install-recommends openssh-server \\
 && rm -rf /var/lib/apt/lists/* && mkdir -p /run/sshd
"""

_INSTALL = {
    "docker": "install Docker (https://docs.docker.com/engine/install/) and start its daemon",
    "podman": "install Podman (apt-get install podman runc) and configure it (.ci/engine-setup)",
}

# sshd reads its own config, host key and authorized keys from /etc/skyward, copied in
# before the container starts; StrictModes off since engines may remap file owners.
_START = (
    "mkdir -p /run/sshd && chmod 600 /etc/skyward/ssh_host_key "
    '&& exec "$(command -v sshd || echo /usr/sbin/sshd)" -D -e -f /etc/skyward/sshd_config'
)


CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


def _host_tools() -> tuple[list[str], list[tuple[str, str]]]:
    """What a node container borrows from this machine to make its venv: this kernel's
    ``uv`` binary, the user's uv cache (so packages come from disk) and the CA bundle
    (a minimal image has none): ``(volume options, environment)``."""
    volumes: list[str] = []
    env: list[tuple[str, str]] = []
    uv = shutil.which("uv", path=os.path.dirname(sys.executable)) or shutil.which("uv")
    if uv:
        volumes += ["-v", f"{os.path.realpath(uv)}:/usr/local/bin/uv:ro"]
        cache = os.environ.get("UV_CACHE_DIR") or os.path.join(
            os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "uv"
        )
        os.makedirs(cache, exist_ok=True)
        volumes += ["-v", f"{cache}:/var/cache/skyward-uv"]
        env.append(("UV_CACHE_DIR", "/var/cache/skyward-uv"))
    if os.path.exists(CA_BUNDLE):
        volumes += ["-v", f"{os.path.realpath(CA_BUNDLE)}:/etc/skyward/ca.crt:ro"]
        env.append(("SSL_CERT_FILE", "/etc/skyward/ca.crt"))
    return volumes, env


def _sshd_config(instance_id: str, env: tuple[tuple[str, str], ...]) -> str:
    lines = [
        "Port 22",
        "HostKey /etc/skyward/ssh_host_key",
        "AuthorizedKeysFile /etc/skyward/authorized_keys",
        "PermitRootLogin prohibit-password",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UsePAM no",
        "StrictModes no",
        "AllowStreamLocalForwarding yes",
        "AcceptEnv LANG LC_*",
        "Subsystem sftp internal-sftp",
        "PidFile /run/sshd.pid",
    ]
    pairs = [("LANG", "C.UTF-8"), *env, ("SKYWARD_INSTANCE", instance_id)]
    quoted = " ".join(json.dumps(f"{key}={value}") for key, value in pairs)
    lines.append(f"SetEnv {quoted}")
    return "\n".join(lines) + "\n"


@dataclass
class _EngineNode:
    instance_id: str
    node_id: int
    root: Path

    @property
    def container(self) -> str:
        return safe_name(self.instance_id)


@dataclass
class EngineCluster(NodeCluster):
    """The context of one cluster of containers: its folder, image and nodes."""

    image: str
    nodes: dict[str, _EngineNode] = field(default_factory=dict)


class EngineRuntime:
    """Launches, watches and removes containers through the ``docker``/``podman`` CLI."""

    offer_type = "container"
    ssh_user = "root"

    def __init__(self, engine: str, base_dir: Path, image: str | None = None) -> None:
        self.engine = engine
        self.base_dir = base_dir
        self.image = image

    async def _cli(self, *args: str, timeout: float = 60.0) -> tuple[int, str, str]:
        """Run the engine's CLI; (exit code, stdout, stderr)."""
        binary = shutil.which(self.engine)
        if binary is None:
            raise ProvisionError(
                f"the container runtime '{self.engine}' is not installed: {_INSTALL[self.engine]}"
            )
        proc = await asyncio.create_subprocess_exec(
            binary, *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise ProvisionError(
                f"'{self.engine} {args[0]}' did not finish within {timeout:.0f} s"
            ) from None
        return proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace")

    async def _must(self, *args: str, timeout: float = 60.0) -> str:
        code, out, err = await self._cli(*args, timeout=timeout)
        if code != 0:
            last = (err.strip() or out.strip()).splitlines()[-1:] or ["no output"]
            raise ProvisionError(f"'{self.engine} {args[0]}' failed ({code}): {last[0]}")
        return out

    async def _ensure_image(self, folder: Path) -> str:
        image = self.image or DEFAULT_IMAGE
        code, _, _ = await self._cli("image", "inspect", image)
        if code == 0:
            return image
        if self.image:
            raise ProvisionError(f"{self.engine} image '{image}' not found: build or pull it first")
        build = folder / "image"
        build.mkdir(parents=True, exist_ok=True)
        (build / "Dockerfile").write_text(DOCKERFILE)
        code, out, err = await self._cli("build", "-t", image, str(build), timeout=1800)
        if code != 0:
            last = (err.strip() or out.strip()).splitlines()[-1:] or ["no output"]
            raise ProvisionError(
                f"could not build the {self.engine} image '{image}' (is a registry reachable? "
                f"else make it with .ci/engine-setup or pass image=): {last[0]}"
            )
        return image

    async def prepare(
        self, cluster_id: str, spec: ClusterSpec, keys: ClusterKeys, note: ResourceNote
    ) -> EngineCluster:
        code, out, err = await self._cli("version", timeout=30)
        if code != 0:
            last = (err.strip() or out.strip()).splitlines()[-1:] or ["no output"]
            raise ProvisionError(f"the {self.engine} engine is not usable: {last[0]}")
        note("folder", str(self.base_dir / safe_name(cluster_id)))
        folder = private_dir(self.base_dir / safe_name(cluster_id))
        try:
            image = await self._ensure_image(folder)
            await self._check_python(image)
        except BaseException:
            await asyncio.to_thread(remove_tree, folder)
            raise
        return EngineCluster(cluster_id, spec, folder, image)

    def restore(self, cluster_id: str, spec: ClusterSpec, resources: Resources) -> EngineCluster:
        """The cluster's folder, as noted; its containers are found by their label."""
        folder = first(resources, "folder") or str(self.base_dir / safe_name(cluster_id))
        return EngineCluster(cluster_id, spec, Path(folder), self.image or DEFAULT_IMAGE)

    async def _check_python(self, image: str) -> None:
        """The image's Python must be the kernel's major.minor (cloudpickle needs it)."""
        found = (
            await self._must(
                "run", "--rm", image, "python3", "-c",
                "import sys; print('%d.%d' % sys.version_info[:2])",
            )
        ).strip()  # fmt: skip
        if found != PYTHON:
            raise ProvisionError(
                f"{self.engine} image '{image}' has Python {found or '(none)'}, the kernel runs "
                f"{PYTHON}: cloudpickle needs the same major.minor"
            )

    async def launch(self, context: NodeCluster, request: LaunchRequest) -> str:
        context = own(context, EngineCluster)
        suffix = secrets.token_hex(3)
        node = _EngineNode(
            f"ctr-{context.cluster_id}-{request.node_id}-{suffix}",
            request.node_id,
            context.dir / f"n{request.node_id}-{suffix}",
        )
        files = node.root / "skyward"
        files.mkdir(parents=True, mode=0o700)
        volumes, tool_env = _host_tools()
        for name, text in (
            ("ssh_host_key", request.host_key.rstrip("\n") + "\n"),
            ("authorized_keys", request.keys.public_key.strip() + "\n"),
            ("sshd_config", _sshd_config(node.instance_id, (*tool_env, *request.env))),
        ):
            (files / name).write_text(text)
            (files / name).chmod(0o600)
        context.nodes[node.instance_id] = node
        try:
            await self._must(
                "create", "--name", node.container, "--hostname", f"node{request.node_id}",
                "--label", f"skyward.cluster={context.cluster_id}",
                "--label", f"skyward.node={request.node_id}",
                "--label", f"skyward.instance={node.instance_id}",
                "-p", "127.0.0.1::22", *volumes, context.image, "/bin/sh", "-c", _START,
            )  # fmt: skip
            await self._must("cp", f"{files}/.", f"{node.container}:/etc/skyward")
            await self._must("start", node.container)
        except BaseException:
            # The caller never learns this id: leave nothing behind under it.
            await asyncio.shield(self.destroy(context, node.instance_id))
            raise
        return node.instance_id

    def _node(self, context: EngineCluster, instance_id: str) -> _EngineNode:
        node = context.nodes.get(instance_id)
        return node or _EngineNode(instance_id, -1, context.dir / "unknown")

    async def _state(self, container: str) -> dict[str, object] | None:
        code, out, _ = await self._cli("inspect", "--format", "{{json .State}}", container)
        if code != 0:
            return None
        with contextlib.suppress(ValueError):
            state = json.loads(out)
            return state if isinstance(state, dict) else None
        return None

    async def _logs(self, container: str) -> str:
        code, out, err = await self._cli("logs", "--tail", "20", container)
        return (out + err).strip()

    async def wait_running(
        self, context: NodeCluster, instance_id: str, timeout: float
    ) -> Instance:
        context = own(context, EngineCluster)
        node = self._node(context, instance_id)
        deadline = time.monotonic() + timeout
        while True:
            state = await self._state(node.container)
            if state is None:
                raise ProvisionError(f"container {node.container} disappeared")
            if state.get("Status") in ("exited", "dead"):
                raise ProvisionError(
                    f"container {node.container} exited with code {state.get('ExitCode')}"
                    f"\n--- container log ---\n{await self._logs(node.container)}"
                )
            if state.get("Status") == "running":
                port = await self._ssh_port(node.container)
                if port and await _ssh_banner("127.0.0.1", port):
                    return Instance(
                        id=instance_id,
                        status="running",
                        ip="127.0.0.1",
                        private_ip=await self._private_ip(node.container) or "127.0.0.1",
                        ssh_port=port,
                        region="local",
                        offer=local_offer(self.offer_type),
                    )
            if time.monotonic() > deadline:
                raise ProvisionError(
                    f"container {node.container} had no SSH server within {timeout:.0f} s"
                )
            await asyncio.sleep(0.1)

    async def _ssh_port(self, container: str) -> int | None:
        code, out, _ = await self._cli("port", container, "22/tcp")
        for line in out.splitlines() if code == 0 else []:
            host, _, port = line.strip().rpartition(":")
            if host in ("127.0.0.1", "0.0.0.0") and port.isdigit():
                return int(port)
        return None

    async def _private_ip(self, container: str) -> str:
        code, out, _ = await self._cli(
            "inspect", "--format", "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
            container,
        )  # fmt: skip
        return out.split()[0] if code == 0 and out.split() else ""

    async def status(self, context: NodeCluster, instance_id: str) -> StatusReport:
        context = own(context, EngineCluster)
        state = await self._state(self._node(context, instance_id).container)
        if state is None:
            return StatusReport(InstanceState.TERMINATED, "container not found")
        status = str(state.get("Status", ""))
        if status == "running":
            return StatusReport(InstanceState.RUNNING)
        if status in ("created", "configured", "initialized"):
            return StatusReport(InstanceState.PENDING, f"container {status}")
        return StatusReport(
            InstanceState.TERMINATED, f"container {status} (exit code {state.get('ExitCode')})"
        )

    async def destroy(self, context: NodeCluster, instance_id: str) -> None:
        context = own(context, EngineCluster)
        node = self._node(context, instance_id)
        await self._remove([node.container])
        if node.root.exists():
            await asyncio.to_thread(remove_tree, node.root)
        context.nodes.pop(instance_id, None)

    async def _remove(self, containers: list[str]) -> None:
        """``rm -f`` and confirm: return only once none of them exists."""
        if not containers:
            return
        await self._cli("rm", "-f", "-v", *containers, timeout=120)
        deadline = time.monotonic() + 30
        while True:
            left = [c for c in containers if await self._state(c) is not None]
            if not left:
                return
            if time.monotonic() > deadline:
                raise ProvisionError(f"{self.engine} containers still exist: {', '.join(left)}")
            await self._cli("rm", "-f", "-v", *left, timeout=120)
            await asyncio.sleep(0.2)

    async def teardown(self, context: NodeCluster) -> None:
        context = own(context, EngineCluster)
        for instance_id in list(context.nodes):
            await self.destroy(context, instance_id)
        out = await self._must(
            "ps", "-a", "-q", "--filter", f"label=skyward.cluster={context.cluster_id}"
        )
        await self._remove(out.split())
        await asyncio.to_thread(remove_tree, context.dir)
        if context.dir.exists():
            raise ProvisionError(f"could not remove the cluster folder {context.dir}")


async def _ssh_banner(host: str, port: int) -> bool:
    """Whether an SSH server answers (a port proxy may accept before sshd listens)."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 2)
    except (OSError, TimeoutError):
        return False
    try:
        line = await asyncio.wait_for(reader.readline(), 2)
        return line.startswith(b"SSH-")
    except (OSError, TimeoutError):
        return False
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
