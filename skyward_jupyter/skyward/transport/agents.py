"""Each bootstrapped instance's SSH connection and agent client: the node channels the
core watches (``core.channels.NodeChannels``) and the session sends cells through."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ..core.bus import EventBus
from ..core.channels import LostHandler
from ..errors import InstancePreemptedError
from ..events import InstanceId, NodeInstance
from .agent_client import AgentClient
from .ssh import connect

__all__ = ["Agents"]

log = logging.getLogger("skyward")

PING_TIMEOUT = 10.0


class Agents:
    """The agents of this kernel's instances, by instance id."""

    def __init__(self, bus: EventBus) -> None:
        self.bus = bus
        self.clients: dict[InstanceId, AgentClient] = {}
        self.connections: dict[InstanceId, Any] = {}
        self.on_lost: LostHandler | None = None

    def add(self, connection: Any, agent: AgentClient) -> None:
        """Keep a node's open agent (and its connection); its loss is reported to
        ``on_lost`` from now on."""
        iid = agent.node.instance.id
        self.connections[iid] = connection
        self.clients[iid] = agent
        agent.on_lost = self._lost

    def get(self, instance_id: InstanceId) -> AgentClient | None:
        """The agent of an instance, connected or not (None if it has none)."""
        return self.clients.get(instance_id)

    def _lost(self, agent: AgentClient, reason: str) -> None:
        if self.on_lost is not None:
            self.on_lost(agent.node, reason)
        else:
            agent.fail(InstancePreemptedError(agent.node.node, reason))

    def connected(self, instance_id: InstanceId) -> bool:
        agent = self.clients.get(instance_id)
        return agent is not None and agent.connected

    async def ping(self, instance_ids: list[InstanceId]) -> None:
        agents = [a for i in instance_ids if (a := self.clients.get(i)) and a.connected]
        await asyncio.gather(
            *(a.ping(timeout=PING_TIMEOUT) for a in agents), return_exceptions=True
        )

    async def reconnect(self, node: NodeInstance, host_public_key: str) -> None:
        iid = node.instance.id
        agent = self.clients[iid]
        connection = await connect(node, host_public_key, timeout=10.0)
        try:
            await agent.reconnect(connection, timeout=10.0)
        except BaseException:
            connection.close()
            raise
        old = self.connections.get(iid)
        self.connections[iid] = connection
        if old is not None and old is not connection:
            old.close()

    def fail(self, instance_id: InstanceId, error: BaseException) -> None:
        agent = self.clients.get(instance_id)
        if agent is not None:
            agent.fail(error)

    async def attach(self, node: NodeInstance, host_public_key: str, cluster: Any) -> AgentClient:
        """Take over the running agent of an instance another kernel bootstrapped."""
        connection = await connect(node, host_public_key, timeout=60.0)
        try:
            result = await connection.run("cd ~ && echo $HOME", check=True)
            home = str(result.stdout).strip()
            agent = AgentClient(self.bus, node, connection, f"{home}/.skyward/agent.sock")
            agent.last_seq = 1 << 62  # only what happens from now on: no replay of old cells
            await agent.open(timeout=20.0)
        except BaseException:
            connection.close()
            raise
        self.add(connection, agent)
        return agent

    async def disconnect(self, instance_id: InstanceId) -> None:
        """Close the agent channel and SSH connection of an instance."""
        agent = self.clients.pop(instance_id, None)
        if agent is not None:
            await agent.aclose()
        connection = self.connections.pop(instance_id, None)
        if connection is not None:
            connection.close()

    async def aclose(self) -> None:
        """Close every channel (the agents keep running until their instances go)."""
        for iid in list(self.clients):
            await self.disconnect(iid)
