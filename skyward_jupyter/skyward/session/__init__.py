"""The kernel's session with its cluster: what the notebook layer talks to."""

from .session import CellRun, ClusterStatus, NodeStatus, Session, distribution_of_module

__all__ = ["CellRun", "ClusterStatus", "NodeStatus", "Session", "distribution_of_module"]
