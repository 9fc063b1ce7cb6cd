"""The ``container`` provider: cloud-like instances on this machine (see ``provider``)."""

from .procs import live_processes
from .provider import ContainerProvider

__all__ = ["ContainerProvider", "live_processes"]
