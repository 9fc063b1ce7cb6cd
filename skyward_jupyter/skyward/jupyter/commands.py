"""The ``%skyward`` commands other than ``run``: up, status, down, attach, offers, the
orphans of dead kernels, and file transfers. Each prints what it did in one or two lines."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence
from typing import Any

from IPython.core.error import UsageError
from IPython.display import display

from ..errors import SkywardError
from ..session import Session
from . import envsync, options
from .kernel import KERNEL
from .live_panel import panel
from .output import UpProgress
from .transfer_bar import TransferBar

__all__ = ["attach", "check_orphans", "down", "down_orphans", "files", "offers", "status", "up"]


def warn(text: str) -> None:
    """A line for the user on stderr (a warning, not the command's result)."""
    print(text, file=sys.stderr)


async def up(session: Session, args: Any) -> None:
    spec = options.spec_from(args)
    current = session.status()
    if current is not None and session.is_up():
        raise UsageError(f"cluster {current.id} is already up; `%skyward down` it first")
    if not spec.provider:  # no --provider: the cheapest configured one
        spec, name, offer, compared = await session.choose_provider(spec)
        print(_chosen(name, offer, compared))
    panel().show()  # under this cell
    progress = UpProgress(session.events, spec.provider, spec.nodes)
    KERNEL.task = asyncio.current_task()  # the panel's buttons cancel this task
    try:
        ready = await session.up(spec, options.env_values(args))
    except asyncio.CancelledError:
        progress.finish("✗ interrupted: every instance launched so far was destroyed")
        raise KeyboardInterrupt from None
    except SkywardError as exc:
        progress.finish(f"✗ {type(exc).__name__}: instances destroyed")
        raise
    finally:
        KERNEL.task = None
    progress.finish(progress.summary(ready))
    session.on_notice(progress.notice)
    reports, left_behind = session.sync_reports()
    envsync.report_up(spec, reports, left_behind)
    if spec.sync_dirs:
        await files(session, "sync", argparse.Namespace(dirs=list(spec.sync_dirs), on="all"))


def _chosen(name: str, offer: Any, compared: int) -> str:
    gpus = f", {offer.accelerator} x{offer.accelerator_count}" if offer.accelerator else ""
    spot = (
        f", ${offer.spot_price_per_hour:.2f}/h spot"
        if offer.spot_price_per_hour is not None
        else ""
    )
    return (
        f"provider: {name} (cheapest of {compared} offer(s): {offer.instance_type}{gpus}, "
        f"${offer.price_per_hour:.2f}/h on demand{spot})"
    )


def status(session: Session) -> None:
    for line in session.ledger_lines():
        warn(line)
    found = session.status()
    if found is None:
        print("no cluster: start one with `%skyward up --provider container`")
        return
    name = f" ({found.name})" if found.name else ""
    print(
        f"cluster {found.id}{name} · {found.provider} · {found.state.value} · "
        f"{found.nodes} node(s) · up {time.time() - found.created_at:.0f} s"
    )
    for row in found.node_rows:
        why = f"  ({row.reason})" if row.reason else ""
        print(
            f"  node {row.node}  {row.instance_id}  {row.address}  {row.state.value}  "
            f"${row.price_per_hour:.2f}/h{why}"
        )


async def down(session: Session) -> None:
    if not session.is_up():
        print("no cluster is up")
        return
    done = await session.down()
    note = f"; {done.left} could not be destroyed, see the errors above" if done.left else ""
    print(
        f"cluster {done.cluster_id} destroyed ({done.instances} instance(s)) "
        f"in {done.seconds:.1f} s{note}"
    )


async def attach(session: Session, name: str) -> None:
    start = time.monotonic()
    found = await session.attach(name)
    panel().show()
    print(
        f"attached cluster {found.id}: {len(found.node_rows)} node(s) on {found.provider} "
        f"in {time.monotonic() - start:.1f} s; their variables are as the old kernel left them"
    )


async def offers(session: Session, args: Any) -> None:
    spec = options.offers_spec(args)
    rows, skipped = await session.offers(spec, [spec.provider] if spec.provider else None)
    print(session.format_offers(rows, skipped))


async def files(session: Session, name: str, args: Any) -> None:
    """``%skyward sync|get|put``."""
    nodes = await session.select(options.parse_targets(getattr(args, "on", "all")), say=warn)
    await session.transfer(name, nodes, args, print, warn, TransferBar)


# -- the orphans of dead kernels ---------------------------------------------------------


async def down_orphans(session: Session) -> None:
    orphans, leftovers = session.orphans()
    if not orphans and not leftovers:
        print("no orphaned instances in the ledger")
        return
    print(_describe_orphans(orphans, "destroying", leftovers))
    answer = await session.destroy_orphans(orphans)
    for failure in answer.failures:
        warn(f"could not destroy {failure}")
    print(f"destroyed {answer.destroyed} of {len(orphans)} orphaned instance(s)")


def _describe_orphans(orphans: list[Any], verb: str, leftovers: Sequence[Any] = ()) -> str:
    lines = [f"skyward: {len(orphans)} instance(s) whose kernel is gone ({verb}):"]
    for entry in orphans:
        keep = " [--keep]" if entry.keep else ""
        lines.append(
            f"  {entry.provider} {entry.instance_id or '(launch in progress)'}  cluster "
            f"{entry.cluster_id} node {entry.node}  kernel pid {entry.kernel_pid}{keep}"
        )
    for cluster in leftovers:  # shared resources of a cluster with no instance left
        kinds = ", ".join(sorted(cluster.resources)) or "nothing recorded"
        lines.append(
            f"  {cluster.provider} cluster {cluster.cluster_id}: shared resources only "
            f"({kinds})  kernel pid {cluster.kernel_pid}"
        )
    return "\n".join(lines)


async def _cleanup_orphans(
    session: Session, handle: Any, orphans: list[Any], leftovers: list[Any]
) -> None:
    answer = await session.destroy_orphans(orphans)
    text = _describe_orphans(orphans, "destroyed", leftovers)
    if answer.failures:
        text += "\n" + "\n".join(f"  could not destroy {f}" for f in answer.failures)
    handle.update({"text/plain": text}, raw=True)


def check_orphans(session: Session) -> None:
    """At load: destroy what dead kernels left running (kept clusters are only listed)."""
    try:
        found, leftovers = session.orphans()
    except Exception as exc:  # the ledger never stops %load_ext
        found, leftovers = [], []
        warn(f"skyward: {exc}")
    for line in session.ledger_notices():
        warn(line)
    kept = [e for e in found if e.keep]
    doomed = [e for e in found if not e.keep]
    if kept:
        print(
            _describe_orphans(
                kept,
                "kept: `%skyward attach CLUSTER` takes them over, "
                "`%skyward down --orphans` destroys them",
            )
        )
    if not doomed and not leftovers:
        return
    text = _describe_orphans(doomed, "destroying them now", leftovers)
    handle = display({"text/plain": text}, raw=True, display_id=True)
    cleanup = _cleanup_orphans(session, handle, doomed, leftovers)
    try:
        KERNEL.background = asyncio.get_running_loop().create_task(cleanup)
    except RuntimeError:
        asyncio.run(cleanup)
