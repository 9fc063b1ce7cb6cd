"""The process runtime: each node is a local SSH server process (see :mod:`.node`).

Used where no container engine is installed. A node gets its own session, its own
directory as HOME and cwd, and its own loopback address (127.0.0.2, 127.0.0.3, ...), so a
cluster of them looks like a cluster of machines to everything above the provider.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import getpass
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ...core.private_files import private_dir
from ...core.provider import InstanceState, StatusReport, first
from ...errors import ProvisionError
from ...model import Instance
from .common import NodeCluster, local_offer, own, remove_tree, safe_name
from .procs import MARKER, kill_processes, live_processes

if TYPE_CHECKING:
    from ...core.provider import ClusterKeys, LaunchRequest, ResourceNote, Resources
    from ...model import ClusterSpec

__all__ = ["LocalCluster", "ProcessRuntime"]

_PACKAGE_ROOT = str(Path(__file__).resolve().parents[3])  # the folder holding `skyward`
_LOG_TAIL = 20


@dataclass
class _LocalNode:
    instance_id: str
    node_id: int
    root: Path  # control files (keys, log, ready); `home` is the node's HOME
    host: str
    pid: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def ready(self) -> Path:
        return self.root / "ready"

    @property
    def log(self) -> Path:
        return self.root / "node.log"


@dataclass
class LocalCluster(NodeCluster):
    """The context of one cluster of local processes: its folder and its nodes."""

    nodes: dict[str, _LocalNode] = field(default_factory=dict)


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


def _listening_addresses() -> set[str]:
    """IPv4 addresses with a listening TCP socket (Linux); empty where unknown."""
    found: set[str] = set()
    try:
        with open("/proc/net/tcp") as f:
            lines = f.readlines()[1:]
    except OSError:
        return found
    for line in lines:
        cols = line.split()
        if len(cols) > 3 and cols[3] == "0A":
            found.add(socket.inet_ntoa(bytes.fromhex(cols[1].split(":")[0])[::-1]))
    return found


def _bindable(address: str, port: int = 0) -> bool:
    with socket.socket() as sock:
        # As the node's server will: a fixed port left in TIME_WAIT is still bindable.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((address, port))
        except OSError:
            return False
    return True


def _claim_address(port: int = 0) -> tuple[str, int | None]:
    """A loopback address no other live node uses, and the fd of the lock that claims it.

    The lock (flock on a per-address file) passes to the node, which holds it while it
    lives: claims are race-free across processes. Addresses that already have listeners
    are skipped. Where 127.0.0.x beyond .1 cannot be bound (macOS), all nodes share
    127.0.0.1 on distinct ports. With a fixed ``port`` (22, like a cloud machine), the
    address must be free on that port.
    """
    base = Path(tempfile.gettempdir()) / f"skyward-{os.getuid()}"
    base_fd = _own_folder(base)
    try:
        lock_dir = _own_folder(base / "loopback", base_fd)
    finally:
        os.close(base_fd)
    try:
        return _claim_in(lock_dir, port)
    finally:
        os.close(lock_dir)


def _own_folder(path: Path, parent: int | None = None) -> int:
    """Open a folder that must be this user's alone; return its descriptor.

    Made 0700 if missing. A shared temporary folder lets anyone create our name first:
    a symbolic link, something else than a folder, or a folder of another user is
    refused (its owner could claim or block our nodes' addresses); a folder of ours that
    is wider than 0700 (an older version made it so) is tightened.
    """
    name = path.name if parent is not None else str(path)
    with contextlib.suppress(FileExistsError):
        os.mkdir(name, 0o700, dir_fd=parent)
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(name, flags, dir_fd=parent)
    except OSError as exc:
        raise ProvisionError(
            f"{path} is not a folder of ours ({exc.strerror}): remove it and try again"
        ) from exc
    info = os.fstat(fd)
    if info.st_uid != os.getuid():
        os.close(fd)
        raise ProvisionError(
            f"{path} belongs to uid {info.st_uid}, not to this user (uid {os.getuid()}): "
            "another user could claim or block our nodes' addresses; remove it and try again"
        )
    if info.st_mode & 0o077:
        os.fchmod(fd, 0o700)
    return fd


def _claim_in(lock_dir: int, port: int) -> tuple[str, int | None]:
    busy = _listening_addresses()
    for index in range(2, 16 * 256):
        if index % 256 in (0, 255):
            continue
        address = f"127.0.{index // 256}.{index % 256}"
        if address in busy:
            continue
        flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
        fd = os.open(address, flags, 0o600, dir_fd=lock_dir)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        if _bindable(address, port):
            return address, fd
        os.close(fd)
        break
    return "127.0.0.1", None


def _log_tail(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-_LOG_TAIL:])


def _pid_alive(pid: int, instance_id: str) -> bool:
    return pid in live_processes(instance_id)


class ProcessRuntime:
    """Launches, watches and destroys local node processes."""

    offer_type = "local-process"

    def __init__(self, base_dir: Path, ssh_port: int = 0) -> None:
        self.base_dir = base_dir
        self.ssh_user = getpass.getuser()
        self.ssh_port = ssh_port  # 0: a random free port; 22 where a caller needs it

    async def prepare(
        self, cluster_id: str, spec: ClusterSpec, keys: ClusterKeys, note: ResourceNote
    ) -> LocalCluster:
        folder = self.base_dir / safe_name(cluster_id)
        note("folder", str(folder))
        try:
            private_dir(folder)
        except OSError as exc:
            raise ProvisionError(f"cannot create the cluster folder {folder}: {exc}") from exc
        return LocalCluster(cluster_id, spec, folder)

    def restore(self, cluster_id: str, spec: ClusterSpec, resources: Resources) -> LocalCluster:
        """The cluster's folder, as noted; its nodes are found from their instance.json."""
        folder = first(resources, "folder") or str(self.base_dir / safe_name(cluster_id))
        return LocalCluster(cluster_id, spec, Path(folder))

    async def launch(self, context: NodeCluster, request: LaunchRequest) -> str:
        context = own(context, LocalCluster)
        suffix = secrets.token_hex(3)
        instance_id = f"ctr-{context.cluster_id}-{request.node_id}-{suffix}"
        root = context.dir / f"n{request.node_id}-{suffix}"
        try:
            return await asyncio.to_thread(self._spawn, context, request, instance_id, root)
        except OSError as exc:
            await asyncio.to_thread(remove_tree, root)
            raise ProvisionError(f"cannot start node {request.node_id}: {exc}") from exc
        except ProvisionError:
            await asyncio.to_thread(remove_tree, root)
            raise

    def _spawn(
        self, context: LocalCluster, request: LaunchRequest, instance_id: str, root: Path
    ) -> str:
        node = _LocalNode(instance_id, request.node_id, root, host="", pid=0)
        node.home.mkdir(parents=True, mode=0o700)
        _write_private(root / "host_key", request.host_key.rstrip("\n") + "\n")
        _write_private(root / "authorized_keys", request.keys.public_key.strip() + "\n")
        _write_private(root / "env.json", json.dumps(dict(request.env)))
        node.host, lock_fd = _claim_address(self.ssh_port)
        env = dict(os.environ)
        env[MARKER] = instance_id
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH", "")) if p
        )
        env["PYTHONUNBUFFERED"] = "1"
        argv = [
            sys.executable, "-m", "skyward.providers.container.node",
            "--dir", str(node.home), "--host", node.host, "--port", str(self.ssh_port),
            "--host-key", str(root / "host_key"),
            "--authorized-keys", str(root / "authorized_keys"),
            "--instance-id", instance_id,
            "--ready", str(node.ready), "--env-file", str(root / "env.json"),
        ]  # fmt: skip
        try:
            with open(node.log, "ab") as log:
                node.process = subprocess.Popen(
                    argv,
                    cwd=node.home,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    pass_fds=() if lock_fd is None else (lock_fd,),
                )
        finally:
            if lock_fd is not None:
                os.close(lock_fd)  # the node's inherited copy keeps the claim
        node.pid = node.process.pid
        context.nodes[instance_id] = node  # known before anything else can fail
        info = {"instance_id": instance_id, "node_id": request.node_id, "host": node.host}
        (root / "instance.json").write_text(json.dumps({**info, "pid": node.pid}))
        return instance_id

    def _find(self, context: LocalCluster, instance_id: str) -> _LocalNode | None:
        """The node, also one launched by an earlier session (from its instance.json)."""
        if instance_id in context.nodes:
            return context.nodes[instance_id]
        for meta in context.dir.glob("*/instance.json"):
            with contextlib.suppress(OSError, ValueError, KeyError):
                info = json.loads(meta.read_text())
                if info["instance_id"] == instance_id:
                    node = _LocalNode(
                        instance_id, info["node_id"], meta.parent, info["host"], info["pid"]
                    )
                    context.nodes[instance_id] = node
                    return node
        return None

    def _exit_code(self, node: _LocalNode) -> int | None:
        """The node process's exit code, or None while it runs."""
        if node.process is not None:
            return node.process.poll()
        return None if _pid_alive(node.pid, node.instance_id) else -1

    async def wait_running(
        self, context: NodeCluster, instance_id: str, timeout: float
    ) -> Instance:
        context = own(context, LocalCluster)
        node = self._find(context, instance_id)
        if node is None:
            raise ProvisionError(f"unknown container instance {instance_id}")
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(FileNotFoundError):
                ready = json.loads(node.ready.read_text())
                return Instance(
                    id=instance_id,
                    status="running",
                    ip=ready["host"],
                    private_ip=ready["host"],
                    ssh_port=int(ready["port"]),
                    region="local",
                    offer=local_offer(self.offer_type),
                )
            code = self._exit_code(node)
            if code is not None:
                raise ProvisionError(
                    f"container node {node.node_id} ({instance_id}) exited with code {code} "
                    f"before it was ready\n--- node log ---\n{_log_tail(node.log)}"
                )
            if time.monotonic() > deadline:
                raise ProvisionError(
                    f"container node {node.node_id} ({instance_id}) was not ready within "
                    f"{timeout:.0f} s\n--- node log ---\n{_log_tail(node.log)}"
                )
            await asyncio.sleep(0.02)

    async def status(self, context: NodeCluster, instance_id: str) -> StatusReport:
        context = own(context, LocalCluster)
        node = self._find(context, instance_id)
        if node is None:
            return StatusReport(InstanceState.TERMINATED, "instance not found")
        code = await asyncio.to_thread(self._exit_code, node)
        if code is not None:
            return StatusReport(InstanceState.TERMINATED, f"node process exited with code {code}")
        if not node.ready.exists():
            return StatusReport(InstanceState.PENDING, "node process starting")
        return StatusReport(InstanceState.RUNNING)

    async def destroy(self, context: NodeCluster, instance_id: str) -> None:
        context = own(context, LocalCluster)
        node = self._find(context, instance_id)
        if node is None:
            # Never launched here or already gone: still make sure nothing of it runs.
            left = await asyncio.to_thread(kill_processes, instance_id)
            if left:
                raise ProvisionError(
                    f"could not kill processes {left} of container instance {instance_id}"
                )
            return
        if self._exit_code(node) is None:
            self._terminate(node)
            await asyncio.to_thread(self._wait_exit, node, 3.0)
        left = await asyncio.to_thread(kill_processes, instance_id, node.pid)
        if node.process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                await asyncio.to_thread(node.process.wait, 2.0)
        if left:
            raise ProvisionError(
                f"could not kill processes {left} of container instance {instance_id}"
            )
        await asyncio.to_thread(remove_tree, node.root)
        if node.root.exists():
            raise ProvisionError(f"could not remove {node.root} of instance {instance_id}")
        context.nodes.pop(instance_id, None)

    def _wait_exit(self, node: _LocalNode, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self._exit_code(node) is None and time.monotonic() < deadline:
            time.sleep(0.01)

    def _terminate(self, node: _LocalNode) -> None:
        """SIGTERM the node: it kills its own processes and exits, like a shutdown."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if node.process is not None:
                node.process.send_signal(signal.SIGTERM)
            elif _pid_alive(node.pid, node.instance_id):
                os.kill(node.pid, signal.SIGTERM)

    async def teardown(self, context: NodeCluster) -> None:
        context = own(context, LocalCluster)
        instances = set(context.nodes)
        for meta in context.dir.glob("*/instance.json"):
            with contextlib.suppress(OSError, ValueError, KeyError):
                instances.add(json.loads(meta.read_text())["instance_id"])
        for instance_id in sorted(instances):
            await self.destroy(context, instance_id)
        await asyncio.to_thread(remove_tree, context.dir)
        if context.dir.exists():
            raise ProvisionError(f"could not remove the cluster folder {context.dir}")
