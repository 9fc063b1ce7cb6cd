"""``%load_ext skyward``: the magics, the input rewrite, and cleanup at unload and exit.

Reference (also ``%skyward --help`` and ``%skyward?``)::

    %skyward up [--provider P] [--nodes N] [--gpus SPEC] [--pip PKG ...] [--env K=V]
                [--spot | --on-demand] [--region R] [--max-price USD]
                [--runtime process|docker|podman] [--name NAME] [--timeout S]
                [--no-sync-packages] [--python PATH] [--sync DIR]
    %skyward status
    %skyward down
    %%skyward run [--on all|N|N,M]
    %skyward panel [--sidebar]
    %skyward offers [--provider P] [--gpus SPEC] [--spot | --on-demand] [--region R]
                    [--max-price USD]
    %skyward sync [DIR ...]
    %skyward get REMOTE [LOCAL] [--on N]
    %skyward put LOCAL [REMOTE] [--on all|N|N,M]
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import signal
import socket
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class, no_var_expand
from IPython.display import display

from ..errors import CellTimeout, InstancePreemptedError, SkywardError
from ..errors import UsageError as SkywardUsageError
from ..pool import Pool
from . import envsync, local_code, options
from .output import CellOutput, UpProgress
from .remote_errors import combine
from .remote_errors import interrupted as interrupted_error
from .settle import remote_source, settle
from .transform import rewrite
from .variables import LARGE_PUSH, describe_size, pickle_push, select_push

__all__ = ["dispatch", "load", "unload"]

_state: dict[str, Any] = {"pool": None, "shell": None, "cells": 0}


def pool() -> Pool:
    """This kernel's pool (made at load)."""
    if _state["pool"] is None:
        _state["pool"] = Pool()
        atexit.register(_at_exit)
    return _state["pool"]


def _at_exit() -> None:
    if _state["pool"] is not None:
        _state["pool"].close_sync()


@magics_class
class SkywardMagics(Magics):
    """The ``%skyward`` magics. Cells using them are rewritten into ``await`` first, so
    these methods run only when called by other means (``run_line_magic``)."""

    @no_var_expand
    @line_cell_magic
    def skyward(self, line: str, cell: str | None = None) -> None:
        """Provision clusters and run cells on them.

        Examples
        --------
        In [1]: %skyward up --provider container --nodes 2
        ✓ cluster sky-3f2a91bc ready: 2 node(s) on container (local-process) in 1.9 s

        In [2]: %%skyward run
           ...: import os; os.environ["SKYWARD_NODE"]
        [node 0] '0'
        [node 1] '1'

        In [3]: %skyward down
        cluster sky-3f2a91bc destroyed (2 instances)
        """
        parsed = options.parse_command(line)
        if parsed is None:
            return
        command, _ = parsed
        if command == "status":
            _status()
            return
        raise UsageError(
            f"%skyward {command} must start a line of its own in a cell (it runs as a "
            "coroutine on the kernel's loop)"
        )


SkywardMagics.skyward.__doc__ = (SkywardMagics.skyward.__doc__ or "") + "\n" + options.help_text()


async def dispatch(line: str, cell: str | None) -> None:
    """Run one ``%skyward`` command as a coroutine on the kernel's loop."""
    __tracebackhide__ = True
    parsed = options.parse_command(line)
    if parsed is None:
        return
    command, args = parsed
    try:
        if command == "up":
            if cell is not None:
                raise UsageError("%skyward up is a line magic: use one %, not %%")
            await _up(args)
        elif command == "status":
            _status()
        elif command == "down":
            await (_down_orphans() if args.orphans else _down())
        elif command == "run":
            if cell is None:
                raise UsageError("use %%skyward run (two %) at the top of the cell to run")
            await _run(args, cell, line)
        elif command == "panel":  # live panel
            _panel().show(sidebar=args.sidebar)
        elif command == "offers":  # offers
            await _offers(args)
        elif command == "attach":
            await _attach(args.cluster)
        elif command in ("sync", "get", "put"):
            from .files import command as files_command

            await files_command(pool(), command, args)
    except SkywardUsageError as exc:
        raise UsageError(str(exc)) from None


async def _up(args: Any) -> None:
    spec = options.spec_from(args)
    p = pool()
    if p.current is not None and p.current.state.value not in ("destroyed", "failed"):
        raise UsageError(f"cluster {p.current.id} is already up; `%skyward down` it first")
    if not spec.provider:  # offers: no --provider, the cheapest configured one
        spec = await _choose_provider(spec)
    _panel().show()  # live panel: under this cell
    progress = UpProgress(p.bus, spec.provider, spec.nodes)
    _state["task"] = asyncio.current_task()  # live panel: its buttons cancel this task
    try:
        ready = await p.up(spec, options.env_values(args))
    except asyncio.CancelledError:
        progress.finish("✗ interrupted: every instance launched so far was destroyed")
        raise KeyboardInterrupt from None
    except SkywardError as exc:
        progress.finish(f"✗ {type(exc).__name__}: instances destroyed")
        raise
    finally:
        _state["task"] = None
    progress.finish(progress.summary(ready))
    watch = p.watches.get(ready.cluster.id)
    if watch is not None:
        watch.notices.append(progress.notice)
    envsync.report_up(p, spec)
    if spec.sync_dirs:
        from .files import command as files_command

        await files_command(p, "sync", argparse.Namespace(dirs=list(spec.sync_dirs), on="all"))


def _status() -> None:
    p = pool()
    for line in p.ledger.check():
        print(line, file=sys.stderr)
    record = p.current
    if record is None:
        print("no cluster: start one with `%skyward up --provider container`")
        return
    uptime = time.time() - record.created_at
    name = f" ({record.spec.name})" if record.spec.name else ""
    print(
        f"cluster {record.id}{name} · {record.provider.name} · {record.state.value} · "
        f"{record.spec.nodes} node(s) · up {uptime:.0f} s"
    )
    for iid, inst in sorted(record.instances.items(), key=lambda kv: kv[1].node):
        ni = inst.node_instance
        address = f"{ni.instance.ip}:{ni.instance.ssh_port}" if ni else "-"
        price = ni.instance.offer.price_per_hour if ni and ni.instance.offer else 0.0
        state = "ready" if inst.ready else "starting"
        print(f"  node {inst.node}  {iid}  {address}  {state}  ${price:.2f}/h")


async def _down() -> None:
    p = pool()
    record = p.current
    if record is None or record.state.value == "destroyed":
        print("no cluster is up")
        return
    instances = len(record.instances)
    start = time.monotonic()
    await p.down()
    left = len(record.instances)
    note = f"; {left} could not be destroyed, see the errors above" if left else ""
    print(
        f"cluster {record.id} destroyed ({instances} instance(s)) "
        f"in {time.monotonic() - start:.1f} s{note}"
    )


async def _attach(name: str) -> None:
    p = pool()
    start = time.monotonic()
    record = await p.attach(name)
    _panel().show()
    print(
        f"attached cluster {record.id}: {len(record.instances)} node(s) on "
        f"{record.provider.name} in {time.monotonic() - start:.1f} s; their variables are as "
        "the old kernel left them"
    )


async def _down_orphans() -> None:
    p = pool()
    orphans = p.ledger.orphans()
    leftovers = p.ledger.leftovers()
    if not orphans and not leftovers:
        print("no orphaned instances in the ledger")
        return
    print(_describe_orphans(orphans, "destroying", leftovers))
    failures = await p.destroy_orphans(orphans)
    for failure in failures:
        print(f"could not destroy {failure}", file=sys.stderr)
    print(f"destroyed {len(orphans) - len(failures)} of {len(orphans)} orphaned instance(s)")


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


async def _cleanup_orphans(handle: Any, orphans: list[Any], leftovers: list[Any]) -> None:
    failures = await pool().destroy_orphans(orphans)
    text = _describe_orphans(orphans, "destroyed", leftovers)
    if failures:
        text += "\n" + "\n".join(f"  could not destroy {f}" for f in failures)
    handle.update({"text/plain": text}, raw=True)


def _check_orphans() -> None:
    """At load: destroy what dead kernels left running (kept clusters are only listed)."""
    p = pool()
    try:
        found = p.ledger.orphans()
        leftovers = p.ledger.leftovers()
    except Exception as exc:  # the ledger never stops %load_ext
        found, leftovers = [], []
        print(f"skyward: cannot read the ledger {p.ledger.path}: {exc}", file=sys.stderr)
    for line in p.ledger.notices():
        print(line, file=sys.stderr)
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
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    text = _describe_orphans(doomed, "destroying them now", leftovers)
    handle = display({"text/plain": text}, raw=True, display_id=True)
    if loop is not None:
        _state["orphans"] = loop.create_task(_cleanup_orphans(handle, doomed, leftovers))
    else:
        asyncio.run(_cleanup_orphans(handle, doomed, leftovers))


async def _run(args: Any, code: str, line: str) -> None:
    __tracebackhide__ = True
    p = pool()
    nodes = p.select(options.parse_targets(args.on))
    pull = options.parse_names("--pull", args.pull)
    forced = options.parse_names("--push", args.push)
    if args.timeout is not None and args.timeout <= 0:
        raise UsageError("--timeout must be a positive number of seconds")
    budget = options.parse_size("--max-output", args.max_output)
    shell = _state["shell"]
    namespace = shell.user_ns if shell is not None else {}
    push = await pickle_push(select_push(code, namespace, forced, automatic=not args.no_push))
    unsent = p.unsent(nodes, push)  # what the nodes do not hold yet (by content)
    size = sum(payload.size for payload in unsent.values())
    if size > LARGE_PUSH:
        sizes = ", ".join(f"{k}: {describe_size(v.size)}" for k, v in unsent.items())
        print(
            f"skyward: sending {describe_size(size)} of variables to {len(nodes)} node(s) "
            f"({sizes})",
            file=sys.stderr,
        )
    count = shell.execution_count if shell is not None else 0
    await local_code.before_cell(p, nodes)
    cell = p.prepare(nodes, count)
    total = len(p.ready_cluster().node_instances())
    prefixed = total > 1
    tasks = {cell.task_ids[n.node]: n.node for n in nodes}
    view = CellOutput(p.bus, tasks, prefixed=prefixed, grouped=args.group_outputs)
    interrupted = False
    _state["task"] = asyncio.current_task()  # live panel: its Interrupt button cancels this
    try:
        await p.run(
            cell,
            remote_source(line, code),
            push=push or None,
            pull=pull or None,
            timeout=args.timeout,
            second_interrupt=_waker.next_interrupt if _waker.installed else None,
            count=count,
            max_output=budget,
        )
    except asyncio.CancelledError:
        interrupted = True
    finally:
        _state["task"] = None
        outcome = settle(cell, view, interrupted, prefixed, budget)
        view.close()
    preempted = [a for a in cell.results.values() if isinstance(a, InstancePreemptedError)]
    if preempted and args.retry_on_preemption and not interrupted:
        for error in preempted:
            print(
                f"skyward: node {error.node} was lost ({error.reason}); running the cell again "
                "on its replacement",
                file=sys.stderr,
            )
            await p.replacement(error.node)
        args.on = ",".join(str(e.node) for e in preempted)
        args.retry_on_preemption = False
        await _run(args, code, line)
        preempted = []
    if outcome.pulled:
        many = len(cell.nodes) > 1
        for name in pull:
            namespace[name] = (
                {n: v[name] for n, v in outcome.pulled.items()}
                if many
                else outcome.pulled[cell.nodes[0].node][name]
            )
    if interrupted:
        raise interrupted_error(outcome.interrupts, prefixed) from None
    if cell.timed_out:
        raise CellTimeout(args.timeout, outcome.stopped)
    if outcome.crashes:
        raise outcome.crashes[0]
    if outcome.errors:
        raise combine(envsync.annotate(outcome.errors), prefixed)
    if len(preempted) == 1 and len(outcome.lost) == 1:
        raise preempted[0]
    if outcome.lost:
        raise SkywardError("; ".join(outcome.lost))


class _SignalWaker:
    """Wakes the kernel's loop when a signal arrives, so an interrupt is seen at once.

    The kernel's SIGINT may be delivered to any of its threads; Python then runs the
    handler (which cancels the awaiting cell) in the main thread only when the loop next
    wakes, which for a cell awaiting a remote answer may be many seconds later. A wakeup
    fd read by the loop makes the C-level handler wake it. Installed only where no wakeup
    fd is set yet, and removed at unload.
    """

    def __init__(self) -> None:
        self._pair: tuple[socket.socket, socket.socket] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiters: list[asyncio.Future[None]] = []

    @property
    def installed(self) -> bool:
        return self._pair is not None

    async def next_interrupt(self) -> None:
        """Return when the next SIGINT arrives (a second interrupt of a running cell)."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    def install(self) -> None:
        if self._pair is not None or threading.current_thread() is not threading.main_thread():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        reader, writer = socket.socketpair()
        reader.setblocking(False)
        writer.setblocking(False)
        previous = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
        if previous != -1:
            signal.set_wakeup_fd(previous)
            reader.close()
            writer.close()
            return
        loop.add_reader(reader.fileno(), self._drain, reader)
        self._pair, self._loop = (reader, writer), loop

    def _drain(self, reader: socket.socket) -> None:
        received = b""
        try:
            while chunk := reader.recv(4096):
                received += chunk
        except OSError:
            pass
        if signal.SIGINT in received:
            waiters, self._waiters = self._waiters, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    def remove(self) -> None:
        if self._pair is None or threading.current_thread() is not threading.main_thread():
            return
        reader, writer = self._pair
        signal.set_wakeup_fd(-1)
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(reader.fileno())
        reader.close()
        writer.close()
        self._pair = self._loop = None


_waker = _SignalWaker()


# -- live panel ---------------------------------------------------------------


def _panel() -> Any:
    """This kernel's live panel (made on first use, on the kernel's loop)."""
    from .panel.widget import Panel

    p = pool()
    panel = _state.get("panel")
    if panel is None or panel.bus is not p.bus:
        if panel is not None:
            panel.close()
        actions = {"shutdown": _panel_shutdown, "interrupt": _panel_interrupt}
        panel = _state["panel"] = Panel(p.bus, asyncio.get_running_loop(), actions)
    return panel


def _panel_interrupt() -> None:
    """The panel's Interrupt button (on the loop): cancel the running up or cell."""
    task = _state.get("task")
    if task is not None and not task.done():
        task.cancel()


async def _panel_shutdown() -> None:
    """The panel's Shut down button: stop what runs, then destroy the cluster."""
    _panel_interrupt()
    for _ in range(200):  # let an interrupted cell or up finish its own clean-up
        if _state.get("task") is None:
            break
        await asyncio.sleep(0.05)
    record = pool().current
    if record is not None and record.state.value != "destroyed":
        await pool().down()


# -- end live panel ----------------------------------------------------------------------


def load(shell: Any) -> None:
    """Register the magics and the rewrite on ``shell``."""
    _state["shell"] = shell
    _waker.install()
    shell.register_magics(SkywardMagics)
    cleanup = shell.input_transformers_cleanup
    if rewrite not in cleanup:
        cleanup.append(rewrite)
    pool().colors = str(getattr(shell, "colors", "") or "")
    _check_orphans()


def unload(shell: Any) -> None:
    """Destroy this kernel's instances, then remove the rewrite and the magics."""
    panel = _state.pop("panel", None)  # live panel
    if panel is not None:
        panel.close()
    p: Pool | None = _state["pool"]
    if p is not None:
        p.close_sync()
        _state["pool"] = None
        atexit.unregister(_at_exit)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is not None:
            closing = loop.create_task(_close_quietly(p))
            _state["closing"] = closing
    cleanup = shell.input_transformers_cleanup
    if rewrite in cleanup:
        cleanup.remove(rewrite)
    _waker.remove()
    shell.magics_manager.magics["line"].pop("skyward", None)
    shell.magics_manager.magics["cell"].pop("skyward", None)


async def _close_quietly(p: Pool) -> None:
    for agent in list(p.bootstrapper.agents):
        await p.bootstrapper.disconnect(agent)
    await p.bus.aclose()


# -- offers --
async def _offers(args: Any) -> None:
    from ..providers.offers import format_offers, gather_offers

    spec = options.offers_spec(args)
    names = [spec.provider] if spec.provider else None
    rows, skipped = await gather_offers(spec, names)
    print(format_offers(rows, skipped))


async def _choose_provider(spec: Any) -> Any:
    """``up`` without ``--provider``: the cheapest offer of the configured providers."""
    from dataclasses import replace

    from ..providers.offers import choose_offer, gather_offers

    rows, skipped = await gather_offers(spec)
    name, offer = choose_offer(rows, skipped, spec)
    gpus = f", {offer.accelerator} x{offer.accelerator_count}" if offer.accelerator else ""
    print(
        f"provider: {name} (cheapest of {len(rows)} offer(s): {offer.instance_type}{gpus}, "
        f"${offer.price_per_hour:.2f}/h on demand"
        + (
            f", ${offer.spot_price_per_hour:.2f}/h spot"
            if offer.spot_price_per_hour is not None
            else ""
        )
        + ")"
    )
    return replace(spec, provider=name)


# -- end offers --
