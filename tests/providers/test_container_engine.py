"""The container provider's engine runtime with Podman, for real (set up by .ci/engine-setup).

Skipped where Podman or the ``skyward-node`` image is missing.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from pathlib import Path

import asyncssh
import pytest
from skyward.core.provider import ClusterKeys, InstanceState, LaunchRequest
from skyward.model import ClusterSpec
from skyward.providers.container import ContainerProvider
from skyward.providers.container.engine_runtime import DEFAULT_IMAGE


def _engine_ready() -> str:
    """Why the engine test cannot run here, or '' when it can."""
    if shutil.which("podman") is None:
        return "podman is not installed (run .ci/engine-setup as root)"
    found = subprocess.run(["podman", "image", "exists", DEFAULT_IMAGE], capture_output=True)
    if found.returncode != 0:
        return f"podman image {DEFAULT_IMAGE} is missing (run .ci/engine-setup as root)"
    return ""


pytestmark = [
    pytest.mark.engine,
    pytest.mark.skipif(bool(_engine_ready()), reason=_engine_ready() or "ready"),
]

SPEC = ClusterSpec(provider="container", runtime="podman")


async def _containers(label: str) -> list[str]:
    proc = await asyncio.create_subprocess_exec(
        "podman", "ps", "-a", "-q", "--filter", f"label={label}",
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await proc.communicate()
    return out.decode().split()


def _request(keys: ClusterKeys, node_id: int) -> tuple[LaunchRequest, asyncssh.SSHKey]:
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    request = LaunchRequest(
        "e1", node_id, SPEC, keys,
        host_key.export_private_key("openssh").decode(),
        host_key.export_public_key("openssh").decode().strip(),
        env=(("SKYWARD_TEST_VAR", "a value with spaces"),),
    )  # fmt: skip
    return request, host_key.convert_to_public()


async def test_podman_node_serves_ssh_and_is_removed(tmp_path: Path) -> None:
    key = asyncssh.generate_private_key("ssh-ed25519")
    key_path = tmp_path / "id_ed25519"
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.export_private_key("openssh"))
    keys = ClusterKeys(str(key_path), key.export_public_key("openssh").decode().strip())
    provider = ContainerProvider(runtime="podman", base_dir=tmp_path / "base")
    context = await provider.prepare("e1", SPEC, keys)
    try:
        request, host_key = _request(keys, 0)
        iid = await provider.launch(context, request)
        instance = await provider.wait_running(context, iid, timeout=60)
        assert instance.offer is not None and instance.offer.instance_type == "container"
        assert (await provider.status(context, iid)).state is InstanceState.RUNNING
        async with asyncssh.connect(
            instance.ip,
            instance.ssh_port,
            username=provider.ssh_user,
            client_keys=[str(key_path)],
            known_hosts=([host_key], [], []),
            agent_path=None,
        ) as conn:
            result = await conn.run(
                "python3 -c 'import sys; print(\"%d.%d\" % sys.version_info[:2])'; "
                'pwd; echo "$SKYWARD_TEST_VAR"; echo "$SKYWARD_INSTANCE"',
                check=True,
            )
            assert result.stdout.split("\n")[:4] == [
                "3.11", "/root", "a value with spaces", iid,
            ]  # fmt: skip
            async with conn.start_sftp_client() as sftp:
                await sftp.makedirs(".skyward/lib", exist_ok=True)
                async with sftp.open(".skyward/lib/x.txt", "w") as f:
                    await f.write("uploaded")
            assert (await conn.run("cat .skyward/lib/x.txt")).stdout == "uploaded"
        await provider.destroy(context, iid)
        assert await _containers(f"skyward.instance={iid}") == []
        assert (await provider.status(context, iid)).state is InstanceState.TERMINATED

        # A container the context forgot (a crashed session) is still found by its label.
        request, _ = _request(keys, 1)
        lost = await provider.launch(context, request)
        context.nodes.pop(lost)  # type: ignore[attr-defined]
        assert len(await _containers("skyward.cluster=e1")) == 1
    finally:
        await provider.teardown(context)
    assert await _containers("skyward.cluster=e1") == []
    assert not (tmp_path / "base" / "e1").exists()


async def test_a_podman_node_bootstraps_and_runs_a_cell_with_ipython() -> None:
    """The whole path in a container with no pip and no uv of its own: it borrows this
    machine's uv (and its cache and CA bundle), makes the venv, runs the IPython worker."""
    from skyward.events import ConsoleOutput
    from skyward.session import Session

    pool = Session()
    said: list[str] = []
    pool.bus.subscribe(ConsoleOutput, lambda e: said.append(e.content))
    try:
        ready = await pool.up(ClusterSpec("container", runtime="podman"))
        [node] = ready.cluster.nodes
        cell = pool.prepare([node])
        await pool.run(cell, "import IPython, sys\n(IPython.__version__, sys.version_info[:2])")
        [answer] = cell.results.values()
        assert answer.ok, answer
        assert not [line for line in said if "host key not rotated" in line]  # sshd: SIGHUP
    finally:
        await pool.aclose()
    assert await _containers(f"skyward.cluster={ready.cluster.id}") == []
