"""The ``container`` provider: instances on this machine, with or without an engine.

``runtime="process"`` (the default, and what works with nothing installed) runs each node
as a local SSH server process; ``"docker"`` and ``"podman"`` run each node as a container
with sshd. Either way the node is reached over SSH like a cloud machine.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ...core.provider import no_note
from ...errors import UsageError
from .common import default_base_dir, local_offer

if TYPE_CHECKING:
    from ...core.provider import ClusterKeys, LaunchRequest, ResourceNote, Resources, StatusReport
    from ...events import InstanceId, ProviderName
    from ...model import ClusterSpec, Instance, Offer
    from .common import NodeCluster
    from .engine_runtime import EngineRuntime
    from .process_runtime import ProcessRuntime

__all__ = ["RUNTIMES", "ContainerProvider"]

RUNTIMES = ("process", "docker", "podman")


class ContainerProvider:
    """Local instances: one process or one container per node."""

    name: ProviderName = "container"

    def __init__(
        self,
        runtime: str = "process",
        base_dir: str | Path | None = None,
        image: str | None = None,
        ssh_port: int = 0,
    ) -> None:
        if runtime not in RUNTIMES:
            raise UsageError(
                f"unknown container runtime '{runtime}': choose one of {', '.join(RUNTIMES)}"
            )
        self.runtime = runtime
        self.base_dir = Path(base_dir) if base_dir is not None else default_base_dir()
        self._impl: ProcessRuntime | EngineRuntime
        if runtime == "process":
            from .process_runtime import ProcessRuntime

            self._impl = ProcessRuntime(self.base_dir, ssh_port)
        else:
            from .engine_runtime import EngineRuntime

            self._impl = EngineRuntime(runtime, self.base_dir, image)
        self.ssh_user: str = self._impl.ssh_user

    @property
    def orphan_command(self) -> str:
        """How a node ends itself when its kernel is gone: stop the node's SSH server
        (which ends every process of the node) or the container's first process."""
        if self.runtime == "process":
            return 'kill -TERM "$SKYWARD_NODE_PID"'
        return "kill -TERM 1"

    async def offers(self, spec: ClusterSpec) -> list[Offer]:
        """This machine, free: the one offer of the container provider."""
        kind = "local-process" if self.runtime == "process" else "container"
        return [local_offer(kind)]

    async def prepare(
        self, cluster_id: str, spec: ClusterSpec, keys: ClusterKeys, note: ResourceNote = no_note
    ) -> NodeCluster:
        """Create the cluster's folder (and, for an engine, make sure the image exists)."""
        return await self._impl.prepare(cluster_id, spec, keys, note)

    async def restore(
        self, cluster_id: str, spec: ClusterSpec, resources: Resources, note: ResourceNote = no_note
    ) -> NodeCluster:
        """The context of an existing cluster: its folder (and nodes found in it)."""
        return self._impl.restore(cluster_id, spec, resources)

    async def launch(self, context: NodeCluster, request: LaunchRequest) -> InstanceId:
        """Start one node; its id is known at once, its SSH endpoint after wait_running."""
        return await self._impl.launch(context, request)

    async def wait_running(
        self, context: NodeCluster, instance_id: InstanceId, timeout: float
    ) -> Instance:
        """Wait until the node's SSH server listens; return where it is."""
        return await self._impl.wait_running(context, instance_id, timeout)

    async def status(self, context: NodeCluster, instance_id: InstanceId) -> StatusReport:
        """RUNNING while the node lives, TERMINATED (with the reason) once it died."""
        return await self._impl.status(context, instance_id)

    async def destroy(self, context: NodeCluster, instance_id: InstanceId) -> None:
        """Kill the node and everything it started; return once nothing of it is left."""
        await self._impl.destroy(context, instance_id)

    async def teardown(self, context: NodeCluster) -> None:
        """Destroy any node left and remove the cluster's folder (and containers)."""
        await self._impl.teardown(context)
