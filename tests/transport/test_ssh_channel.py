"""The SSH channel on loopback: a real asyncssh server forwards the agent's unix socket.

The agent's end is a small unix-socket server that speaks the protocol's frames; the
client opens it the way bootstrap does (``AgentClient(bus, node, connection, path)``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import asyncssh
import pytest
from skyward import protocol as P
from skyward.core.bus import EventBus
from skyward.errors import AgentError
from skyward.events import Instance, NodeInstance
from skyward.transport.agent_client import AgentClient
from skyward.transport.channel import SSHOpener

NODE = NodeInstance(Instance("i-0", ip="127.0.0.1"), 0, "container", "u", "/k")


class Forwarding(asyncssh.SSHServer):
    """Lets the client in without a password and forwards its unix-socket channels."""

    def begin_auth(self, username: str) -> bool:
        return False

    def unix_connection_requested(self, dest_path: str) -> bool:
        return True


@pytest.fixture
async def ssh(tmp_path: Path) -> AsyncIterator[asyncssh.SSHClientConnection]:
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    server = await asyncssh.create_server(Forwarding, "127.0.0.1", 0, server_host_keys=[host_key])
    port = server.sockets[0].getsockname()[1]
    trusted = host_key.convert_to_public()
    connection = await asyncssh.connect(
        "127.0.0.1", port, username="u", known_hosts=([trusted], [], []), agent_path=None
    )
    try:
        yield connection
    finally:
        connection.close()
        server.close()
        await server.wait_closed()


async def agent_end(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Says hello, then runs each cell as started, one line, done (numbered frames);
    hangs up when told to refresh into "hang up"."""
    frames = P.FrameReader()
    seq = 0
    while data := await reader.read(1 << 16):
        for frame in frames.feed(data):
            match frame.message:
                case P.Hello():
                    hello = P.HelloReply(77, "3.11", "/home/u", 0, 1, "c", seq, worker="ready")
                    writer.write(P.pack(hello))
                case P.Run(task=task, code=code):
                    for message in (
                        P.Started(task),
                        P.Lines(task, [("stdout", code, False)]),
                        P.Done(task, True, 0.1),
                    ):
                        seq += 1
                        writer.write(P.pack(message, seq))
                case P.Refresh(cwd="hang up"):
                    writer.close()
                    return
    writer.close()


async def test_the_client_waits_for_the_socket_then_runs_a_cell(
    ssh: asyncssh.SSHClientConnection, tmp_path: Path
) -> None:
    path = str(tmp_path / "agent.sock")
    client = AgentClient(EventBus(), NODE, ssh, path)
    opening = asyncio.ensure_future(client.open(timeout=5.0))
    await asyncio.sleep(0.2)  # the agent has not bound its socket yet
    assert not opening.done()
    server = await asyncio.start_unix_server(agent_end, path)
    try:
        hello = await opening
        assert hello.pid == 77 and client.worker_state == "ready"
        answer = await asyncio.wait_for(client.execute(P.Run("t1", "x" * 300_000)), 5.0)
        assert answer == P.Done("t1", True, 0.1)
        assert client.last_seq == 3
    finally:
        await client.aclose()
        server.close()


async def test_a_socket_that_never_appears_is_an_agent_error(
    ssh: asyncssh.SSHClientConnection, tmp_path: Path
) -> None:
    client = AgentClient(EventBus(), NODE, ssh, str(tmp_path / "none.sock"))
    with pytest.raises(AgentError, match=r"node 0: agent socket .*none.sock not reachable"):
        await client.open(timeout=0.3)


async def test_the_agent_closing_its_socket_is_a_lost_channel(
    ssh: asyncssh.SSHClientConnection, tmp_path: Path
) -> None:
    path = str(tmp_path / "agent.sock")
    server = await asyncio.start_unix_server(agent_end, path)
    lost = asyncio.get_running_loop().create_future()
    client = AgentClient(EventBus(), NODE, SSHOpener(ssh, path))
    client.on_lost = lambda c, reason: lost.set_result(reason)
    try:
        await client.open(timeout=5.0)
        client.refresh("hang up")
        assert await asyncio.wait_for(lost, 5.0) == "the connection to the agent was lost"
        assert not client.connected
        await client.reconnect(ssh, timeout=5.0)  # the same socket, over a connection
        assert client.connected
    finally:
        await client.aclose()
        server.close()
