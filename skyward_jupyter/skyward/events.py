"""The event vocabulary: requests (what someone asks for) and facts (what happened).

This module is the project's public contract, exactly as ``spec/events-api.txt`` documents
it, with the open fields from ``spec/event-fields.md``. Nothing here has behaviour.

``reply_to`` on a request is ``None`` or a callable taking one event: the core calls it
once, with the fact that answers the request (``ClusterReady``/``Error`` for
``ClusterRequested``, ``InstanceBootstrapped``/``Error`` for ``InstanceRequested``,
``InstanceBootstrapped``/``BootstrapFailed`` for ``BootstrapRequested``,
``ClusterDestroyed`` for ``ShutdownRequested``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from .model import Cluster, ClusterSpec, Instance, NodeId, NodeInstance, ProviderName

__all__ = [
    "BootstrapCommand",
    "BootstrapFailed",
    "BootstrapPhase",
    "BootstrapRequested",
    "ClusterDestroyed",
    "ClusterId",
    "ClusterProvisioned",
    "ClusterReady",
    "ClusterRequested",
    "ConsoleOutput",
    "Error",
    "Event",
    "Fact",
    "InstanceBootstrapped",
    "InstanceDestroyed",
    "InstanceId",
    "InstanceLaunched",
    "InstancePreempted",
    "InstanceProvisioned",
    "InstanceReplaced",
    "InstanceRequested",
    "InstanceRunning",
    "Log",
    "Metric",
    "NodeId",
    "NodeInstance",
    "ProviderName",
    "Request",
    "RequestId",
    "ShutdownRequested",
    "TaskCompleted",
    "TaskStarted",
]

RequestId = str
ClusterId = str
InstanceId = str
ReplyTo = Callable[[Any], None] | None


# Requests


@dataclass(frozen=True, slots=True)
class ClusterRequested:
    """Pool requests a new cluster from a provider."""

    request_id: RequestId
    provider: ProviderName
    spec: ClusterSpec
    reply_to: ReplyTo = None


@dataclass(frozen=True, slots=True)
class InstanceRequested:
    """Node requests an instance (new or replacement)."""

    request_id: RequestId
    provider: ProviderName
    cluster_id: ClusterId
    node_id: NodeId
    reply_to: ReplyTo = None
    replacing: InstanceId | None = None


@dataclass(frozen=True, slots=True)
class ShutdownRequested:
    """Pool requests cluster shutdown."""

    cluster_id: ClusterId
    reply_to: ReplyTo = None


@dataclass(frozen=True, slots=True)
class BootstrapRequested:
    """An instance is reachable over SSH and should be prepared for work."""

    request_id: RequestId
    instance: NodeInstance
    cluster_id: ClusterId
    reply_to: ReplyTo = None


# Facts


@dataclass(frozen=True, slots=True)
class ClusterProvisioned:
    """Cluster infrastructure is ready."""

    request_id: RequestId
    cluster_id: ClusterId
    provider: ProviderName


@dataclass(frozen=True, slots=True)
class InstanceLaunched:
    """The provider accepted the launch and named the instance."""

    request_id: RequestId
    cluster_id: ClusterId
    node_id: NodeId
    provider: ProviderName
    instance_id: InstanceId


@dataclass(frozen=True, slots=True)
class InstanceRunning:
    """The provider reports the instance running."""

    request_id: RequestId
    cluster_id: ClusterId
    node_id: NodeId
    provider: ProviderName
    instance: Instance
    ssh_user: str = ""
    ssh_key_path: str = ""
    ssh_password: str | None = None
    network_interface: str = ""


@dataclass(frozen=True, slots=True)
class InstanceProvisioned:
    """Instance was created (not yet bootstrapped)."""

    request_id: RequestId
    instance: NodeInstance


@dataclass(frozen=True, slots=True)
class InstanceBootstrapped:
    """Instance finished bootstrap, ready for work."""

    instance: NodeInstance


@dataclass(frozen=True, slots=True)
class InstancePreempted:
    """Instance was preempted (spot interruption)."""

    instance: NodeInstance
    reason: str


@dataclass(frozen=True, slots=True)
class InstanceReplaced:
    """Instance was successfully replaced after preemption."""

    request_id: RequestId
    old_id: InstanceId
    new: NodeInstance


@dataclass(frozen=True, slots=True)
class InstanceDestroyed:
    """Instance was terminated."""

    instance_id: InstanceId


@dataclass(frozen=True, slots=True)
class ClusterReady:
    """Every node of the cluster is bootstrapped."""

    cluster: Cluster


@dataclass(frozen=True, slots=True)
class ClusterDestroyed:
    """Cluster was fully shut down."""

    cluster_id: ClusterId


@dataclass(frozen=True, slots=True)
class TaskStarted:
    """Task execution started on an instance."""

    task_id: str
    instance: NodeInstance
    function_name: str


@dataclass(frozen=True, slots=True)
class TaskCompleted:
    """Task execution completed."""

    task_id: str
    instance: NodeInstance
    duration: float
    success: bool
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Metric:
    """Metric value from an instance."""

    instance: NodeInstance
    name: str
    value: float
    timestamp: float


@dataclass(frozen=True, slots=True)
class Log:
    """Log line from an instance."""

    instance: NodeInstance
    line: str
    stream: Literal["stdout", "stderr"] = "stdout"
    overwrite: bool = False


@dataclass(frozen=True, slots=True)
class ConsoleOutput:
    """Output of a bootstrap command."""

    instance: NodeInstance
    content: str
    stream: Literal["stdout", "stderr"] = "stdout"
    overwrite: bool = False


@dataclass(frozen=True, slots=True)
class BootstrapPhase:
    """A bootstrap phase started, completed or failed."""

    instance: NodeInstance
    event: Literal["started", "completed", "failed"]
    phase: str
    elapsed: float | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class BootstrapCommand:
    """A command the bootstrap runs on the instance."""

    instance: NodeInstance
    command: str


@dataclass(frozen=True, slots=True)
class BootstrapFailed:
    """The bootstrap of an instance failed in a phase."""

    instance: NodeInstance
    phase: str
    error: str


@dataclass(frozen=True, slots=True)
class Error:
    """Something went wrong."""

    request_id: RequestId
    message: str
    fatal: bool = False


Request = ClusterRequested | InstanceRequested | ShutdownRequested | BootstrapRequested
Fact = (
    ClusterProvisioned
    | InstanceLaunched
    | InstanceRunning
    | InstanceProvisioned
    | InstanceBootstrapped
    | InstancePreempted
    | InstanceReplaced
    | InstanceDestroyed
    | ClusterReady
    | ClusterDestroyed
    | TaskStarted
    | TaskCompleted
    | Metric
    | Log
    | ConsoleOutput
    | BootstrapPhase
    | BootstrapCommand
    | BootstrapFailed
    | Error
)
Event = Request | Fact
