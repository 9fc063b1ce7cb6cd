"""skyward: cloud GPUs from a notebook.

``%load_ext skyward`` loads the magics; the names exported here are the event vocabulary
of ``spec/events-api.txt``. The Jupyter layer is imported only when the extension loads,
so ``import skyward`` stays instant (and works on an instance, where the agent uses it).
"""

from .events import (
    BootstrapCommand,
    BootstrapFailed,
    BootstrapPhase,
    BootstrapRequested,
    ClusterDestroyed,
    ClusterId,
    ClusterProvisioned,
    ClusterReady,
    ClusterRequested,
    ConsoleOutput,
    Error,
    Event,
    Fact,
    InstanceBootstrapped,
    InstanceDestroyed,
    InstanceId,
    InstanceLaunched,
    InstancePreempted,
    InstanceProvisioned,
    InstanceReplaced,
    InstanceRequested,
    InstanceRunning,
    Log,
    Metric,
    NodeId,
    NodeInstance,
    ProviderName,
    Request,
    RequestId,
    ShutdownRequested,
    TaskCompleted,
    TaskStarted,
)
from .remote import metric, node

__version__ = "0.1.0"

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
    "load_ipython_extension",
    "metric",
    "node",
    "unload_ipython_extension",
]


def load_ipython_extension(ipython: object) -> None:
    """Register the ``%skyward`` magics (``%load_ext skyward``)."""
    from .jupyter.extension import load

    load(ipython)


def unload_ipython_extension(ipython: object) -> None:
    """Destroy this kernel's clusters and remove the magics (``%unload_ext skyward``)."""
    from .jupyter.extension import unload

    unload(ipython)
