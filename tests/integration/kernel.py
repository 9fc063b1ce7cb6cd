"""A real kernel driven through jupyter_client, recording every iopub message with the
time it arrived, so tests can assert on streaming (not only on final outputs); and the
ways the tests start one: with the extension loaded, or with a cluster up as well."""

from __future__ import annotations

import queue
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from jupyter_client.manager import KernelManager

ANSI = re.compile(r"\x1b\[[0-9;]*m")
OUT = re.compile(r"Out\[(\d+):\d+\]: ")

RECORD_FACTS = (
    "from skyward.jupyter.extension import session as _session\n"
    "_facts = []\n"
    "_session().events.subscribe_all(lambda e: None if type(e).__name__ in "
    "('Log', 'Metric', 'ConsoleOutput') else _facts.append(e))"
)
"""Run in a kernel after ``%load_ext skyward``: its lifecycle facts are then in ``_facts``."""


@dataclass
class Result:
    """What one execute request produced."""

    reply: dict[str, Any]
    messages: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    sent_at: float = 0.0
    idle_at: float = 0.0

    @property
    def ok(self) -> bool:
        return self.reply["content"]["status"] == "ok"

    def displays(self) -> dict[str, str]:
        """The latest text of every display id (updates applied), in creation order."""
        shown: dict[str, str] = {}
        for _, msg in self.messages:
            kind = msg["msg_type"]
            if kind in ("display_data", "update_display_data"):
                did = msg["content"].get("transient", {}).get("display_id", str(id(msg)))
                text = msg["content"]["data"].get("text/plain", "")
                shown[did] = ANSI.sub("", text)
        return shown

    def text(self) -> str:
        """Everything the cell shows now: final display texts, streams, errors."""
        parts = list(self.displays().values())
        for _, msg in self.messages:
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                parts.append(content["text"])
            elif kind == "error":
                parts.append(ANSI.sub("", "\n".join(content["traceback"])))
            elif kind == "execute_result":
                parts.append(content["data"].get("text/plain", ""))
        return "\n".join(parts)

    def streams(self) -> list[tuple[str, str]]:
        """The ``stream`` messages, as ``(name, text)``."""
        return [
            (m["content"]["name"], m["content"]["text"])
            for _, m in self.messages
            if m["msg_type"] == "stream"
        ]

    def values(self) -> dict[int, str]:
        """Each node's cell value: ``Out[node:count]: v`` displays (several nodes) or the
        ``execute_result`` (one unprefixed node), by node."""
        found: dict[int, str] = {}
        for _, msg in self.messages:
            kind, content = msg["msg_type"], msg["content"]
            if kind not in ("display_data", "execute_result"):
                continue
            node = content.get("metadata", {}).get("skyward", {}).get("node")
            text = ANSI.sub("", content["data"].get("text/plain", ""))
            match = OUT.match(text)
            if match:
                found[int(match[1])] = text[match.end() :]
            elif kind == "execute_result" and node is not None:
                found[node] = text
        return found

    def error(self) -> dict[str, Any] | None:
        for _, msg in self.messages:
            if msg["msg_type"] == "error":
                return msg["content"]
        return None


class Kernel:
    """Start a kernel, execute cells, collect messages per cell."""

    def __init__(self, env: dict[str, str] | None = None, cwd: str | None = None) -> None:
        self.manager = KernelManager(kernel_name="python3")
        options: dict[str, Any] = {}
        if env is not None:
            options["env"] = env
        if cwd is not None:
            options["cwd"] = cwd
        self.manager.start_kernel(**options)
        self.client = self.manager.client()
        self.client.start_channels()
        self.client.wait_for_ready(timeout=60)
        self.up: Result | None = None
        """What the ``%skyward up`` of :func:`cluster` showed."""

    def execute(self, code: str, timeout: float = 120, on_message=None) -> Result:
        sent = time.monotonic()
        msg_id = self.client.execute(code)
        result = Result(reply={}, sent_at=sent)
        deadline = sent + timeout
        idle = False
        while not idle:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"cell did not finish in {timeout} s: {code[:60]!r}")
            try:
                msg = self.client.get_iopub_msg(timeout=remaining)
            except queue.Empty:
                continue
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            now = time.monotonic()
            if msg["msg_type"] == "status":
                if msg["content"]["execution_state"] == "idle":
                    idle = True
                    result.idle_at = now
                continue
            result.messages.append((now, msg))
            if on_message is not None:
                on_message(now, msg)
        result.reply = self.client.get_shell_msg(timeout=timeout)
        while result.reply["parent_header"].get("msg_id") != msg_id:
            result.reply = self.client.get_shell_msg(timeout=timeout)
        return result

    def interrupt(self) -> None:
        self.manager.interrupt_kernel()

    def shutdown(self) -> None:
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=False)


def ok(kernel: Kernel, code: str, **kw: Any) -> Result:
    """Execute a cell that must succeed; its output is the failure's message."""
    result = kernel.execute(code, **kw)
    assert result.ok, result.text()
    return result


@contextmanager
def loaded(**options: Any) -> Iterator[Kernel]:
    """A kernel (``Kernel``'s options) with ``%load_ext skyward`` done and its lifecycle
    facts recorded in ``_facts`` (``RECORD_FACTS``), shut at the end."""
    kernel = Kernel(**options)
    try:
        ok(kernel, "%load_ext skyward")
        ok(kernel, RECORD_FACTS)
        yield kernel
    finally:
        kernel.shutdown()


@contextmanager
def cluster(up: str, timeout: float = 600, **options: Any) -> Iterator[Kernel]:
    """A loaded kernel after ``%skyward up <up>``; the cluster goes down at the end."""
    with loaded(**options) as kernel:
        try:
            kernel.up = ok(kernel, f"%skyward up {up}", timeout=timeout)
            yield kernel
        finally:
            kernel.execute("%skyward down", timeout=60)
