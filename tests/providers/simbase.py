"""What the cloud API simulators share: a threaded local HTTP server, fault injection,
and real local instances (the container provider's process runtime) behind each
simulated instance.

A simulator answers its provider's documented endpoints with the documented shapes. An
instance it creates is backed by a real local SSH node launched with the host key and
authorized key the simulator found in what the provider sent (the boot script's
markers), so pinning and bootstrap are exercised for real; the simulator reports the
node's address and port as the instance's public SSH endpoint.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import re
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from skyward.core.provider import ClusterKeys, LaunchRequest
from skyward.model import ClusterSpec
from skyward.providers.bootscript import AUTHORIZED_MARKER, HOST_KEY_MARKER
from skyward.providers.container import ContainerProvider

__all__ = ["Reply", "Request", "Simulator", "parse_boot_script"]


@dataclass
class Request:
    """One HTTP request as the simulator saw it."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any


@dataclass
class Reply:
    """What to answer: status, a JSON (or text) body, extra headers."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)

    def encode(self) -> tuple[bytes, str]:
        if self.body is None:
            return b"", "application/json"
        if isinstance(self.body, str) and self.headers.get("Content-Type") == "text/plain":
            return self.body.encode(), "text/plain"
        return json.dumps(self.body).encode(), "application/json"


def parse_boot_script(script: str) -> tuple[str, str]:
    """The host private key and the authorized public key in a skyward boot script."""
    match = re.search(rf"<<'{HOST_KEY_MARKER}'\n(.*?)\n{HOST_KEY_MARKER}\n", script, flags=re.S)
    authorized = re.search(rf"^KEY='([^']+)'\s+{AUTHORIZED_MARKER}$", script, flags=re.M)
    if match is None or authorized is None:
        raise ValueError("no skyward host key or authorized key in the boot script")
    return match.group(1) + "\n", authorized.group(1)


def b64decode(text: str) -> str:
    return base64.b64decode(text.encode()).decode()


@dataclass
class Fault:
    kind: str  # "429", "500", or "lost" (done, then answered 500)
    times: int
    match: Callable[[Request], bool]


class Simulator:
    """Base of the RunPod, Vast.ai and Verda simulators (a context manager)."""

    name = "sim"

    def __init__(self, ssh_port: int = 0) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix=f"skyward-{self.name}-sim-")
        self.runtime = ContainerProvider(base_dir=Path(self._tmp.name), ssh_port=ssh_port)
        self.lock = threading.RLock()
        self.requests: list[Request] = []
        self.faults: list[Fault] = []
        self.capacity_refusals = 0
        self.sold_out = False
        self._ids = itertools.count(1)
        self._backing: dict[str, str] = {}  # simulated instance id -> backing instance id
        self._dropped: set[str] = set()
        self._loop = asyncio.new_event_loop()
        self._loop_thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._loop_thread.start()
        self._cluster = self.run(
            self.runtime.prepare(
                f"{self.name}-account", ClusterSpec(provider="container"), ClusterKeys("", "")
            )
        )
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._http.daemon_threads = True
        self._http_thread = threading.Thread(target=self._http.serve_forever, daemon=True)
        self._http_thread.start()

    # -- plumbing -----------------------------------------------------------------------

    @property
    def url(self) -> str:
        host, port = self._http.server_address[:2]
        return f"http://{host}:{port}"

    def run(self, coro: Any, timeout: float = 60.0) -> Any:
        """Run a coroutine on the simulator's own loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def new_id(self) -> int:
        return next(self._ids)

    def __enter__(self) -> Simulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.shutdown()
        self._http.server_close()
        for sim_id in list(self._backing):
            self.stop_backing(sim_id)
        self.run(self.runtime.teardown(self._cluster))
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._loop_thread.join(5)
        self._loop.close()
        self._tmp.cleanup()

    # -- faults -------------------------------------------------------------------------

    def fail_with(
        self, kind: str, times: int = 1, match: Callable[[Request], bool] | None = None
    ) -> None:
        """Answer the next ``times`` matching requests with HTTP ``kind`` (429 or 500), or
        (``lost``) carry them out and answer 500, as when the answer is lost."""
        with self.lock:
            self.faults.append(Fault(kind, times, match or (lambda r: True)))

    def refuse_capacity(self, times: int = 1) -> None:
        """Refuse the next ``times`` launches with the provider's capacity error."""
        with self.lock:
            self.capacity_refusals += times

    def sell_out(self, sold_out: bool = True) -> None:
        """The cloud has no machine left (or again has some): while sold out, no offer is
        listed and every launch is refused with the provider's capacity error."""
        with self.lock:
            self.sold_out = sold_out

    def take_capacity_refusal(self) -> bool:
        with self.lock:
            if self.sold_out:
                return True
            if self.capacity_refusals > 0:
                self.capacity_refusals -= 1
                return True
            return False

    def _fault_for(self, request: Request) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.times > 0 and fault.match(request):
                    fault.times -= 1
                    return fault
        return None

    def count(self, method: str, pattern: str) -> int:
        """How many requests matched ``method`` and the path regex ``pattern``."""
        with self.lock:
            return sum(
                1 for r in self.requests if r.method == method and re.search(pattern, r.path)
            )

    # -- backing nodes ------------------------------------------------------------------

    def start_backing(
        self, sim_id: str, node: int, script: str, on_ready: Callable[[str, int], None]
    ) -> None:
        """Launch the real local node of a simulated instance from its boot script; call
        ``on_ready(host, port)`` once it listens (from the simulator's loop)."""
        host_key, authorized = parse_boot_script(script)
        self.start_backing_keys(sim_id, node, host_key, authorized, on_ready)

    def start_backing_keys(
        self,
        sim_id: str,
        node: int,
        host_key: str,
        authorized: str,
        on_ready: Callable[[str, int], None],
    ) -> None:
        """Launch the real local node of a simulated instance that got no skyward boot
        script (a launch by the cloud's own SDK): ``host_key`` is the node's host key,
        ``authorized`` the public key it lets in."""
        request = LaunchRequest(
            f"{self.name}-account",
            node,
            ClusterSpec(provider="container"),
            ClusterKeys("", authorized),
            host_key,
            "",
        )

        async def go() -> None:
            try:
                backing = await self.runtime.launch(self._cluster, request)
                with self.lock:
                    dropped = sim_id in self._dropped
                    if not dropped:
                        self._backing[sim_id] = backing
                if dropped:  # deleted while its node was starting
                    await self.runtime.destroy(self._cluster, backing)
                    return
                instance = await self.runtime.wait_running(self._cluster, backing, 30.0)
            except Exception as exc:
                print(f"{self.name} simulator: backing node of {sim_id} failed: {exc}")
                return
            on_ready(instance.ip, instance.ssh_port)

        asyncio.run_coroutine_threadsafe(go(), self._loop)

    def stop_backing(self, sim_id: str) -> None:
        """Kill the real node behind a simulated instance (delete or preemption)."""
        with self.lock:
            backing = self._backing.pop(sim_id, None)
            self._dropped.add(sim_id)
        if backing is not None:
            self.run(self.runtime.destroy(self._cluster, backing))

    def backing_count(self) -> int:
        with self.lock:
            return len(self._backing)

    # -- requests -----------------------------------------------------------------------

    def new_host_key(self) -> str:
        """A fresh host key (OpenSSH private key text) for a node with no boot script."""
        import asyncssh

        return asyncssh.generate_private_key("ssh-ed25519").export_private_key("openssh").decode()

    def handle(self, request: Request) -> Reply:
        """Answer one request: override in each simulator."""
        raise NotImplementedError

    def dispatch(self, request: Request) -> Reply:
        with self.lock:
            self.requests.append(request)
        fault = self._fault_for(request)
        if fault is None:
            return self.handle(request)
        if fault.kind == "429":
            return Reply(429, {"error": "rate limited"}, {"Retry-After": "1"})
        if fault.kind == "lost":  # done, but the answer is lost on the way back
            self.handle(request)
        return Reply(500, {"error": "internal server error"})


def _handler(sim: Simulator) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = raw.decode(errors="replace")
            query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
            request = Request(self.command, parts.path, query, dict(self.headers), body)
            try:
                reply = sim.dispatch(request)
            except Exception as exc:  # a simulator bug shows as a 599 the test sees
                reply = Reply(599, {"error": f"simulator: {type(exc).__name__}: {exc}"})
            data, kind = reply.encode()
            self.send_response(reply.status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            for key, value in reply.headers.items():
                if key != "Content-Type":
                    self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


class Invalid(Exception):
    """A request the API refuses with 400 (each simulator answers in its API's shape)."""


def check_fields(body: dict[str, Any], allowed: set[str], what: str) -> None:
    """Refuse a body with fields the API does not know, as the real APIs do."""
    unknown = set(body) - allowed
    if unknown:
        raise Invalid(f"{what}: unknown field(s) {', '.join(sorted(unknown))}")


def check_params(query: dict[str, str], allowed: set[str]) -> None:
    """Refuse query parameters the API does not know."""
    unknown = set(query) - allowed
    if unknown:
        raise Invalid(f"unknown query parameter(s) {', '.join(sorted(unknown))}")
