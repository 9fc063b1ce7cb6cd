"""``python -m skyward.agent --socket PATH [--node N] [--nodes M] [--cluster ID] [--grace S]``:
the supervisor. Standard library only."""

from __future__ import annotations

import argparse
import os

from . import supervisor
from .supervisor import Supervisor

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Command line entry: set the node's environment, bind, serve until shutdown."""
    parser = argparse.ArgumentParser(prog="python -m skyward.agent", description=supervisor.__doc__)
    parser.add_argument("--socket", required=True, help="UNIX socket path to listen on")
    parser.add_argument("--node", type=int, default=0, help="this node's index")
    parser.add_argument("--nodes", type=int, default=1, help="number of nodes in the cluster")
    parser.add_argument("--cluster", default="", help="the cluster's id")
    parser.add_argument(
        "--grace",
        type=float,
        default=None,
        help="seconds without a word from the kernel before the instance shuts itself down",
    )
    parser.add_argument(
        "--on-orphan", default="", help="shell command that shuts this instance down"
    )
    args = parser.parse_args(argv)
    os.environ["SKYWARD_NODE"] = str(args.node)
    os.environ["SKYWARD_NODES"] = str(args.nodes)
    os.environ["SKYWARD_CLUSTER"] = args.cluster
    agent = Supervisor(args.socket, args.node, args.nodes, args.cluster, args.grace, args.on_orphan)
    agent.start()
    return agent.wait()


if __name__ == "__main__":
    os._exit(main())  # threads left behind must not keep the agent alive
