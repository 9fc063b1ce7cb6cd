"""What the core needs of the channels to the nodes' agents, which the transport owns.

The core watches nodes and attaches clusters without knowing SSH: it speaks to this
protocol, and the transport's bootstrapper implements it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from ..events import InstanceId, NodeInstance

if TYPE_CHECKING:
    from .registry import ClusterRecord

__all__ = ["LostHandler", "NodeChannels"]

LostHandler = Callable[[NodeInstance, str], None]
"""Called with the node and the reason when its channel drops without our asking."""


class NodeChannels(Protocol):
    """The agents' channels, one per instance."""

    on_lost: LostHandler | None

    def connected(self, instance_id: InstanceId) -> bool:
        """Whether the instance's agent channel is open now."""
        ...

    async def ping(self, instance_ids: list[InstanceId]) -> None:
        """A heartbeat to each connected agent (failures are the watch's business later)."""
        ...

    async def reconnect(self, node: NodeInstance, host_public_key: str) -> None:
        """Open the node's channel again; the agent resends what was missed. Raises if not."""
        ...

    def fail(self, instance_id: InstanceId, error: BaseException) -> None:
        """End the instance's running cells with ``error`` (its node is lost)."""
        ...

    async def attach(
        self, node: NodeInstance, host_public_key: str, cluster: ClusterRecord
    ) -> object:
        """Reach the agent of a node that outlived the kernel that launched it."""
        ...
