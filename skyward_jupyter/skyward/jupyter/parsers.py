"""The parsers of the ``%skyward`` command line: each command's options and their help.

``options.py`` turns what they parse into a ClusterSpec and the other values the magics
use. Mistakes raise IPython's ``UsageError``, which the kernel shows as one line.
"""

from __future__ import annotations

import argparse
from typing import NoReturn, get_args

from IPython.core.error import UsageError

from ..events import ProviderName

__all__ = ["COMMANDS", "PARSERS", "PROVIDERS", "HelpShown"]

PROVIDERS: tuple[str, ...] = get_args(ProviderName)
COMMANDS = ("up", "status", "down", "run", "panel", "offers", "attach", "sync", "get", "put")


class _Parser(argparse.ArgumentParser):
    """argparse that raises UsageError instead of exiting the kernel."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"%skyward {self.prog.split()[-1]}: {message}")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        raise HelpShown(message or "")


class HelpShown(Exception):
    """``--help`` was asked for and printed."""


def _build() -> dict[str, _Parser]:
    up = _Parser(prog="%skyward up", description="Provision a cluster and bootstrap it.")
    up.add_argument(
        "--provider",
        default=None,
        help=f"where to launch: one of {', '.join(PROVIDERS)} (default: the cheapest offer "
        "of the clouds whose credentials are set; 'container', this machine, when none is "
        "and no GPU is asked for; its cells run as you, see --runtime)",
    )
    up.add_argument("--nodes", type=int, default=1, help="how many instances (default: 1)")
    up.add_argument(
        "--gpus",
        default=None,
        help="accelerators per node: a count ('4', any type, cheapest) or TYPE:COUNT "
        "('A100:4'); TYPE alone means one",
    )
    up.add_argument(
        "--pip",
        action="extend",
        nargs="+",
        default=[],
        metavar="PACKAGE",
        help="packages to pip-install on every node (a venv matching the kernel's Python)",
    )
    up.add_argument(
        "--no-sync-packages",
        action="store_true",
        help="do not install the kernel's packages on the nodes (by default every package of "
        "the kernel that an index has is installed there at the kernel's version, with uv; "
        "what cannot be, a local or editable install or a build for another platform, is "
        "named and skipped)",
    )
    up.add_argument(
        "--python",
        default="",
        metavar="PATH",
        help="the node's interpreter to build the venv from, where the image has several "
        "(it must be the kernel's major.minor; default: the first python3.X, python3, python)",
    )
    up.add_argument(
        "--sync",
        action="append",
        default=[],
        metavar="DIR",
        help="send this folder to every node once it is up, as %%skyward sync DIR does "
        "(repeatable)",
    )
    up.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="environment variable for the remote cells (repeatable). Values are secrets: "
        "they reach the nodes once, over the agent channel, and never a file, an event, a "
        "log or a command line",
    )
    up.add_argument(
        "--env-file",
        action="append",
        default=[],
        metavar="PATH",
        help="a .env file of KEY=VALUE lines for the remote cells, kept as secret as --env "
        "(repeatable; --env wins over a file)",
    )
    spot = up.add_mutually_exclusive_group()
    spot.add_argument(
        "--spot",
        dest="spot",
        action="store_const",
        const="always",
        help="spot/interruptible instances only",
    )
    spot.add_argument(
        "--on-demand",
        dest="spot",
        action="store_const",
        const="never",
        help="on-demand instances only (default: the cheapest of both)",
    )
    up.add_argument("--region", default=None, help="provider region or zone")
    up.add_argument(
        "--max-price", type=float, default=None, help="highest price per node-hour, in USD"
    )
    up.add_argument(
        "--runtime",
        choices=("process", "docker", "podman"),
        default="process",
        help="container provider only: 'process' (the default) runs each node as a process "
        "of yours on this machine, apart from the others only by its own session, folder "
        "(its HOME) and loopback address: no sandbox, its cells read and write what you can, "
        "~/.aws and ~/.ssh included; 'docker' or 'podman' run each node in a container "
        "(its own files, processes and network, none of your files mounted)",
    )
    up.add_argument("--name", default="", help="a name for the cluster (shown in status)")
    up.add_argument(
        "--timeout",
        type=float,
        default=900.0,
        help="seconds allowed for launching and for bootstrapping each node (default: 900)",
    )
    up.add_argument(
        "--keep",
        action="store_true",
        help="keep the instances when the kernel exits or restarts (the ledger remembers "
        "them; they still shut down after --grace without a kernel)",
    )
    up.add_argument(
        "--grace",
        type=float,
        default=600.0,
        metavar="S",
        help="seconds an instance waits without a word from its kernel before it shuts "
        "itself down (default: 600)",
    )
    up.add_argument(
        "--idle-timeout",
        type=float,
        default=None,
        metavar="S",
        help="shut the cluster down after S seconds with no cell running",
    )
    up.add_argument(
        "--ttl",
        type=float,
        default=None,
        metavar="S",
        help="shut the cluster down S seconds after it is up",
    )
    up.add_argument(
        "--max-cost",
        type=float,
        default=None,
        metavar="USD",
        help="shut the cluster down when its cost so far reaches USD (a warning at 80%%)",
    )
    up.add_argument(
        "--no-replace",
        action="store_true",
        help="do not replace a node that is preempted or lost (default: replace it)",
    )
    status = _Parser(prog="%skyward status", description="Show the cluster and its nodes.")
    down = _Parser(prog="%skyward down", description="Destroy every instance of the cluster.")
    down.add_argument(
        "--orphans",
        action="store_true",
        help="instead, destroy the instances in the ledger whose kernel is gone (kept ones too)",
    )
    run = _Parser(
        prog="%%skyward run",
        description="Run the cell on the cluster's nodes. Each node runs it with IPython "
        "itself (the kernel's version), so everything a local cell does works there: a "
        "trailing ';', Out and _, pretty printing, display() and _repr_*_ objects, "
        "matplotlib figures (inline), !cmd and x = !cmd, line and cell magics (%%timeit, "
        "%%time, %%pip, %%env, %%cd, ...), top-level await, and IPython's tracebacks. "
        "Only %%skyward itself (and %%load_ext skyward) belong to the kernel.",
    )
    run.add_argument(
        "--on",
        default="all",
        help="which nodes: 'all' (default), 'head' (node 0), a node id ('0'), or a list ('0,2')",
    )
    run.add_argument(
        "--push",
        default="",
        metavar="A,B",
        help="send these kernel variables with the cell (besides the ones found automatically)",
    )
    run.add_argument(
        "--no-push",
        action="store_true",
        help="do not send the kernel variables the cell reads (by default, names the cell "
        "reads but does not define, and that exist in the kernel, are sent)",
    )
    run.add_argument(
        "--pull",
        "-o",
        default="",
        metavar="A,B",
        help="after the cell, assign these remote variables in the kernel: the value itself "
        "with one target node, a dict {node: value} with several",
    )
    run.add_argument(
        "--timeout",
        type=float,
        default=None,
        metavar="S",
        help="interrupt the cell after S seconds; a node that does not stop within 5 s more "
        "is restarted (its variables are lost)",
    )
    run.add_argument(
        "--max-output",
        default="10MB",
        metavar="SIZE",
        help="output shown per node and cell, past which it is cut with a line saying how "
        "much (the panel's log keeps the end); e.g. 500KB, 10MB (default), 1GB",
    )
    run.add_argument(
        "--retry-on-preemption",
        action="store_true",
        help="when a node is lost while the cell runs, run the cell again on its replacement",
    )
    run.add_argument(
        "--no-wait",
        action="store_true",
        help="fail at once, running nothing, when a node the cell is for is being replaced "
        "(default: wait for its replacement, within --timeout)",
    )
    run.add_argument(
        "--group-outputs",
        action="store_true",
        help="show each node's output together, node by node, when the cell ends "
        "(default: stream it while the cell runs)",
    )
    # -- live panel --
    panel = _Parser(
        prog="%skyward panel",
        description="Show the live panel of the cluster (again) here, or in the sidebar.",
    )
    panel.add_argument(
        "--sidebar",
        action="store_true",
        help="open it in JupyterLab's right sidebar (needs the sidecar package); elsewhere "
        "it is shown under the cell, with a note",
    )
    # -- end live panel --
    # -- offers --
    offers = _Parser(
        prog="%skyward offers",
        description="List matching offers of the configured providers, cheapest first.",
    )
    offers.add_argument(
        "--provider", default=None, help="only this provider (default: every configured one)"
    )
    offers.add_argument(
        "--gpus", default=None, help="accelerators per node: a count ('4') or TYPE:COUNT ('A100:4')"
    )
    offers_spot = offers.add_mutually_exclusive_group()
    offers_spot.add_argument(
        "--spot", dest="spot", action="store_const", const="always", help="spot prices only"
    )
    offers_spot.add_argument(
        "--on-demand", dest="spot", action="store_const", const="never", help="on-demand only"
    )
    offers.add_argument("--region", default=None, help="provider region, zone or location")
    offers.add_argument(
        "--max-price", type=float, default=None, help="highest price per node-hour, in USD"
    )
    # -- end offers --
    attach = _Parser(
        prog="%skyward attach",
        description="Take over a cluster started with --keep by a kernel that is gone.",
    )
    attach.add_argument("cluster", help="the cluster's id (or its --name)")
    sync = _Parser(
        prog="%skyward sync",
        description="Send folders to every node, into the cells' folder there (~/<this "
        "notebook folder's name>/...): only files whose content changed since the last send, "
        "without what .gitignore ignores; a warning over 1 GB.",
    )
    sync.add_argument("dirs", nargs="*", metavar="DIR", help="folders (default: this one, '.')")
    get = _Parser(
        prog="%skyward get",
        description="Bring a file or folder from a node (a checkpoint, plots, logs), with a "
        "progress bar for large transfers.",
    )
    get.add_argument(
        "remote",
        metavar="REMOTE",
        help="path on the node, relative to the cells' folder (or absolute, or ~/...)",
    )
    get.add_argument(
        "local",
        nargs="?",
        default=None,
        metavar="LOCAL",
        help="where to put it here (default: its name, in this folder)",
    )
    get.add_argument("--on", default="0", help="which node (default: 0, the head)")
    put = _Parser(prog="%skyward put", description="Send a file to the nodes.")
    put.add_argument("local", metavar="LOCAL", help="the file here")
    put.add_argument(
        "remote",
        nargs="?",
        default=None,
        metavar="REMOTE",
        help="path on the nodes, relative to the cells' folder (default: the "
        "file's place relative to this folder; a trailing / keeps its name)",
    )
    put.add_argument("--on", default="all", help="which nodes: 'all' (default), 'head', N, N,M")
    return {
        "up": up, "status": status, "down": down, "run": run, "panel": panel, "offers": offers,
        "attach": attach, "sync": sync, "get": get, "put": put,
    }  # fmt: skip


PARSERS = _build()
