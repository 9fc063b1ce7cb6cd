"""The container provider's process runtime, for real: local SSH nodes, no mocks.

Two nodes are shared by the read-only tests (launched once per module); tests that kill
or destroy launch their own.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import stat
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncssh
import pytest
from skyward.core.provider import ClusterKeys, InstanceState, LaunchRequest, Provider
from skyward.errors import ProvisionError, UsageError
from skyward.model import ClusterSpec, Instance
from skyward.providers import get_provider
from skyward.providers.container import ContainerProvider, live_processes

SPEC = ClusterSpec(provider="container", nodes=2)


@dataclass
class Node:
    instance: Instance
    host_key: asyncssh.SSHKey
    home: Path


@dataclass
class Cluster:
    provider: ContainerProvider
    context: object
    keys: ClusterKeys
    nodes: list[Node]


def make_keys(folder: Path) -> ClusterKeys:
    key = asyncssh.generate_private_key("ssh-ed25519")
    path = folder / "id_ed25519"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.export_private_key("openssh"))
    return ClusterKeys(str(path), key.export_public_key("openssh").decode().strip())


async def launch(
    provider: ContainerProvider, context: object, keys: ClusterKeys, node_id: int
) -> Node:
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    request = LaunchRequest(
        "c1", node_id, SPEC, keys,
        host_key.export_private_key("openssh").decode(),
        host_key.export_public_key("openssh").decode().strip(),
        env=(("SKYWARD_TEST_VAR", "a value with spaces"),),
    )  # fmt: skip
    instance_id = await provider.launch(context, request)
    instance = await provider.wait_running(context, instance_id, timeout=20)
    home = Path(context.nodes[instance_id].home)  # type: ignore[attr-defined]
    return Node(instance, host_key.convert_to_public(), home)


def connect(node: Node, keys: ClusterKeys, host_key: asyncssh.SSHKey | None = None, **kw):  # noqa: ANN201
    return asyncssh.connect(
        node.instance.ip,
        node.instance.ssh_port,
        username="anyone",
        client_keys=kw.pop("client_keys", [keys.private_key_path]),
        known_hosts=([host_key or node.host_key], [], []),
        agent_path=None,
        **kw,
    )


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    folder = tmp_path_factory.mktemp("container")
    provider = ContainerProvider(base_dir=folder / "base")
    keys = make_keys(folder)

    async def up() -> Cluster:
        context = await provider.prepare("c1", SPEC, keys)
        nodes = await asyncio.gather(*(launch(provider, context, keys, n) for n in range(2)))
        return Cluster(provider, context, keys, list(nodes))

    up_cluster = asyncio.run(up())
    yield up_cluster
    asyncio.run(provider.teardown(up_cluster.context))
    ids = [n.instance.id for n in up_cluster.nodes]
    assert all(live_processes(i) == [] for i in ids)
    assert not (folder / "base" / "c1").exists()


def test_protocol_and_factory(tmp_path: Path) -> None:
    provider = get_provider("container", base_dir=tmp_path)
    assert isinstance(provider, Provider)
    assert provider.name == "container"
    with pytest.raises(UsageError, match="unknown provider 'nope'"):
        get_provider("nope")
    with pytest.raises(UsageError, match="unknown container runtime"):
        ContainerProvider(runtime="lxc")


def test_nodes_have_distinct_loopback_addresses(cluster: Cluster) -> None:
    ips = [n.instance.ip for n in cluster.nodes]
    assert len(set(ips)) == 2
    for node in cluster.nodes:
        inst = node.instance
        assert inst.ip.startswith("127.") and inst.ip != "127.0.0.1"
        assert inst.private_ip == inst.ip and inst.status == "running"
        assert inst.offer is not None and inst.offer.provider == "container"
        assert inst.offer.instance_type == "local-process" and inst.offer.price_per_hour == 0.0
        assert inst.offer.vcpus == os.cpu_count()


async def test_exec_environment_and_exit_status(cluster: Cluster) -> None:
    for node in cluster.nodes:
        async with connect(node, cluster.keys) as conn:
            result = await conn.run(
                'pwd; echo "$HOME"; echo "$SKYWARD_INSTANCE"; echo "$SKYWARD_TEST_VAR"; '
                "python -c 'import sys; print(sys.executable)'; echo oops >&2; exit 3",
                encoding=None,
            )
        lines = result.stdout.decode().splitlines()
        assert result.exit_status == 3
        assert result.stderr == b"oops\n"
        assert lines[:4] == [
            str(node.home),
            str(node.home),
            node.instance.id,
            "a value with spaces",
        ]
        assert Path(lines[4]).parent == Path(sys.executable).parent


async def test_binary_stdin_stdout_and_concurrent_sessions(cluster: Cluster) -> None:
    payload = bytes(range(256)) * 1024
    async with connect(cluster.nodes[0], cluster.keys) as conn:
        result = await conn.run("cat", input=payload, encoding=None)
        assert result.stdout == payload and result.exit_status == 0
        start = time.monotonic()
        results = await asyncio.gather(*(conn.run(f"echo {i}") for i in range(30)))
        assert [r.stdout for r in results] == [f"{i}\n" for i in range(30)]
        assert time.monotonic() - start < 5


async def test_signal_kills_remote_command(cluster: Cluster) -> None:
    async with connect(cluster.nodes[0], cluster.keys) as conn:
        process = await conn.create_process("sleep 30")
        await asyncio.sleep(0.2)
        process.send_signal("TERM")
        result = await asyncio.wait_for(process.wait(), 5)
        assert result.exit_signal is not None and result.exit_signal[0] == "TERM"


async def test_wrong_host_key_is_rejected(cluster: Cluster) -> None:
    other = asyncssh.generate_private_key("ssh-ed25519").convert_to_public()
    with pytest.raises(asyncssh.HostKeyNotVerifiable):
        async with connect(cluster.nodes[0], cluster.keys, host_key=other):
            pass


async def test_wrong_client_key_is_rejected(cluster: Cluster) -> None:
    stranger = asyncssh.generate_private_key("ssh-ed25519")
    with pytest.raises(asyncssh.PermissionDenied):
        async with connect(cluster.nodes[0], cluster.keys, client_keys=[stranger]):
            pass
    with pytest.raises(asyncssh.PermissionDenied):
        async with connect(cluster.nodes[0], cluster.keys, client_keys=[], password="root"):
            pass


async def test_sftp_relative_upload(cluster: Cluster, tmp_path: Path) -> None:
    local = tmp_path / "agent.py"
    local.write_bytes(b"print('hi')\n\x00\xff")
    async with connect(cluster.nodes[1], cluster.keys) as conn, conn.start_sftp_client() as sftp:
        assert await sftp.realpath(".") == str(cluster.nodes[1].home)
        await sftp.makedirs(".skyward/lib/skyward", exist_ok=True)
        await sftp.put(str(local), ".skyward/lib/skyward/agent.py")
        await sftp.chmod(".skyward/lib/skyward/agent.py", 0o700)
        result = await conn.run("cat .skyward/lib/skyward/agent.py", encoding=None)
        assert result.stdout == local.read_bytes()
        mode = (await sftp.stat(".skyward/lib/skyward/agent.py")).permissions
        assert mode is not None and mode & 0o777 == 0o700
    assert (cluster.nodes[1].home / ".skyward/lib/skyward/agent.py").exists()


ECHO_SERVER = (
    "import asyncio\n"
    "async def echo(r, w):\n"
    "    w.write(await r.read(4)); await w.drain(); w.close()\n"
    "async def main():\n"
    "    s = await asyncio.start_unix_server(echo, '.skyward/echo.sock')\n"
    "    await s.serve_forever()\n"
    "asyncio.run(main())\n"
)


async def test_unix_socket_forwarding_inside_home(cluster: Cluster) -> None:
    node = cluster.nodes[0]
    async with connect(node, cluster.keys) as conn:
        async with conn.start_sftp_client() as sftp:
            await sftp.makedirs(".skyward", exist_ok=True)
            async with sftp.open(".skyward/echo.py", "w") as f:
                await f.write(ECHO_SERVER)
        await conn.run(
            "setsid nohup python .skyward/echo.py >/dev/null 2>&1 </dev/null &", check=True
        )
        await conn.run(
            "for i in $(seq 100); do test -S .skyward/echo.sock && exit 0; sleep 0.05; done; "
            "exit 1",
            check=True,
        )
        for path in (".skyward/echo.sock", str(node.home / ".skyward/echo.sock")):
            reader, writer = await conn.open_unix_connection(path)
            writer.write(b"ping")
            assert await reader.read() == b"ping"
            writer.close()
        with pytest.raises(asyncssh.ChannelOpenError):
            await conn.open_unix_connection("/tmp/elsewhere.sock")
        with pytest.raises(asyncssh.ChannelOpenError):
            await conn.open_unix_connection("../outside.sock")


async def test_destroy_kills_detached_processes_and_removes_dir(tmp_path: Path) -> None:
    provider = ContainerProvider(base_dir=tmp_path / "base")
    keys = make_keys(tmp_path)
    context = await provider.prepare("c2", SPEC, keys)
    node = await launch(provider, context, keys, 0)
    iid = node.instance.id
    async with connect(node, keys) as conn:
        await conn.run("setsid nohup sleep 300 >/dev/null 2>&1 </dev/null &", check=True)
        await conn.run("(trap '' TERM; exec sleep 301) >/dev/null 2>&1 &", check=True)
    assert len(live_processes(iid)) >= 3  # the node and both sleeps
    assert (await provider.status(context, iid)).state is InstanceState.RUNNING
    start = time.monotonic()
    await provider.destroy(context, iid)
    assert time.monotonic() - start < 5
    assert live_processes(iid) == []
    assert not node.home.exists() and not node.home.parent.exists()
    assert (await provider.status(context, iid)).state is InstanceState.TERMINATED
    await provider.destroy(context, iid)  # idempotent
    await provider.teardown(context)
    assert not (tmp_path / "base" / "c2").exists()


async def test_status_terminated_after_kill9(tmp_path: Path) -> None:
    provider = ContainerProvider(base_dir=tmp_path / "base")
    keys = make_keys(tmp_path)
    context = await provider.prepare("c3", SPEC, keys)
    node = await launch(provider, context, keys, 0)
    iid = node.instance.id
    pid = context.nodes[iid].pid  # type: ignore[attr-defined]
    os.kill(pid, signal.SIGKILL)
    for _ in range(100):
        report = await provider.status(context, iid)
        if report.state is InstanceState.TERMINATED:
            break
        await asyncio.sleep(0.02)
    assert report.state is InstanceState.TERMINATED
    assert "-9" in report.reason
    await provider.teardown(context)
    assert live_processes(iid) == []


async def test_node_that_cannot_start_reports_its_log(tmp_path: Path) -> None:
    provider = ContainerProvider(base_dir=tmp_path / "base")
    keys = make_keys(tmp_path)
    context = await provider.prepare("c4", SPEC, keys)
    request = LaunchRequest("c4", 0, SPEC, keys, "not a key", "ssh-ed25519 AAAA")
    iid = await provider.launch(context, request)
    with pytest.raises(ProvisionError, match=r"exited with code 1 before it was ready") as err:
        await provider.wait_running(context, iid, timeout=20)
    assert "node log" in str(err.value)
    await provider.teardown(context)
    assert live_processes(iid) == []


async def test_missing_engine_is_a_clear_provision_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = make_keys(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path))  # no engine binary on this PATH
    for runtime in ("docker", "podman"):
        provider = ContainerProvider(runtime=runtime, base_dir=tmp_path / "base")
        assert provider.ssh_user == "root"
        with pytest.raises(ProvisionError, match=f"'{runtime}' is not installed: install"):
            await provider.prepare("c5", SPEC, keys)


@pytest.mark.skipif(not shutil.which("docker"), reason="no docker CLI on this machine")
async def test_docker_without_daemon_is_a_clear_provision_error(tmp_path: Path) -> None:
    info = await asyncio.create_subprocess_exec(
        "docker", "info", stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    if await info.wait() == 0:
        pytest.skip("a docker daemon runs here")
    provider = ContainerProvider(runtime="docker", base_dir=tmp_path / "base")
    with pytest.raises(ProvisionError, match="docker engine is not usable"):
        await provider.prepare("c6", SPEC, make_keys(tmp_path))


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


async def test_folders_are_0700_and_a_wide_lock_folder_of_ours_is_tightened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    lock = tmp_path / f"skyward-{os.getuid()}"
    lock.mkdir()
    os.chmod(lock, 0o755)  # as an older version left it
    provider = ContainerProvider(base_dir=tmp_path / "data" / "container")
    keys = make_keys(tmp_path)
    old = os.umask(0o022)
    try:
        context = await provider.prepare("c8", SPEC, keys)
        node = await launch(provider, context, keys, 0)
    finally:
        os.umask(old)
    try:
        for folder in (lock, lock / "loopback", tmp_path / "data", tmp_path / "data" / "container"):
            assert _mode(folder) == 0o700, folder
        assert _mode(lock / "loopback" / node.instance.ip) == 0o600
    finally:
        await provider.teardown(context)


@pytest.mark.parametrize("trap", ["another user's", "a symbolic link", "a file", "loopback"])
async def test_a_lock_folder_made_by_someone_else_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, trap: str
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    lock = tmp_path / f"skyward-{os.getuid()}"
    if trap in ("another user's", "loopback"):
        if os.getuid() != 0:
            pytest.skip("giving a folder to another user needs root")
        stolen = lock / "loopback" if trap == "loopback" else lock
        stolen.mkdir(parents=True, mode=0o777)
        os.chown(stolen, 12345, 12345)
    elif trap == "a symbolic link":
        (tmp_path / "theirs").mkdir()
        lock.symlink_to(tmp_path / "theirs")
    else:
        lock.write_text("")
    provider = ContainerProvider(base_dir=tmp_path / "base")
    keys = make_keys(tmp_path)
    context = await provider.prepare("c9", SPEC, keys)
    try:
        with pytest.raises(ProvisionError, match=f"skyward-{os.getuid()}"):
            await launch(provider, context, keys, 0)
        assert list((tmp_path / "base" / "c9").iterdir()) == []  # nothing left of the node
        if trap == "a symbolic link":
            assert list((tmp_path / "theirs").iterdir()) == []  # nothing made through it
    finally:
        await provider.teardown(context)
