"""The records that events carry: offers, instances, node bindings, cluster specs, clusters.

These are the types that ``spec/event-fields.md`` gives to the fields the seed page leaves
open. Like the events, they are frozen, slotted dataclasses with no behaviour and no I/O.
``NodeInstance`` (and the two aliases it needs) is on the seed page, so ``events`` exports
it; it lives here because ``Cluster`` holds it, and a record must not import the events.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = [
    "Cluster",
    "ClusterSpec",
    "Instance",
    "NodeId",
    "NodeInstance",
    "Offer",
    "ProviderName",
    "SpotPolicy",
]

NodeId = int
ProviderName = Literal["aws", "gcp", "vastai", "verda", "runpod", "container"]

SpotPolicy = Literal["auto", "always", "never"]
"""``always``: spot only; ``never``: on-demand only; ``auto``: the cheapest of both."""


@dataclass(frozen=True, slots=True)
class Offer:
    """A machine a provider can launch, with its hourly price."""

    provider: str
    instance_type: str
    accelerator: str | None = None
    accelerator_count: int = 0
    vcpus: float = 0.0
    memory_gb: float = 0.0
    price_per_hour: float = 0.0
    spot_price_per_hour: float | None = None
    region: str = ""


@dataclass(frozen=True, slots=True)
class Instance:
    """One launched machine: where to reach it and what it costs."""

    id: str
    status: str = "pending"
    ip: str = ""
    private_ip: str = ""
    ssh_port: int = 22
    spot: bool = False
    region: str = ""
    offer: Offer | None = None


@dataclass(frozen=True, slots=True)
class ClusterSpec:
    """What the user asked for in ``%skyward up``."""

    provider: str
    nodes: int = 1
    accelerator: str | None = None
    accelerator_count: int = 0
    python: str = ""
    pip: tuple[str, ...] = ()
    apt: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    """The names of the cells' environment variables (``--env``); their values are
    secrets, kept out of the spec (see ``skyward.secrets``)."""
    spot: SpotPolicy = "auto"
    region: str | None = None
    max_price: float | None = None
    runtime: str = "process"
    name: str = ""
    launch_timeout: float = 600.0
    bootstrap_timeout: float = 900.0
    keep: bool = False
    grace: float = 600.0
    idle_timeout: float | None = None
    ttl: float | None = None
    max_cost: float | None = None
    replace: bool = True
    sync_packages: bool = True
    interpreter: str = ""
    sync_dirs: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class NodeInstance:
    """Instance bound to a node — infrastructure context + offer."""

    instance: Instance
    node: NodeId
    provider: ProviderName
    ssh_user: str
    ssh_key_path: str
    ssh_password: str | None = None
    network_interface: str = ""


@dataclass(frozen=True, slots=True)
class Cluster:
    """A cluster as provisioned: its id, spec and the instances bound to its nodes."""

    id: str
    provider: str
    spec: ClusterSpec
    nodes: tuple[NodeInstance, ...] = ()
