"""One local instance: an SSH server on its own loopback address, in its own directory.

Run as ``python -m skyward.providers.container.node --dir D --host 127.0.0.X ...`` by the
``container`` provider's process runtime. It behaves like the sshd of a cloud machine, so
the client goes through the very same SSH, bootstrap and agent path:

- public-key auth for the one authorized key (any user name), the pinned host key;
- exec requests run as real subprocesses (``bash -c``) with ``HOME`` = cwd = D, a plain
  PATH and ``SKYWARD_INSTANCE=<id>``, the marker by which all of its processes are found;
  the nodes of this machine share the user's uv cache (``UV_CACHE_DIR``), so a package
  downloaded for one is installed on the next from disk, and this machine's network
  settings (certificates, proxies, package indexes: ``_NETWORK_ENV``);
- SFTP with relative paths resolved against D; direct UNIX-socket forwarding to sockets
  inside D (how the client reaches the agent);
- on SIGTERM/SIGINT it kills every process carrying its marker, like a machine shutting
  down, and exits; on SIGUSR1 it reads its host key file again (``SKYWARD_HOST_KEY_FILE``
  in the commands' environment), as sshd does on SIGHUP: how the bootstrap rotates it.

Like OpenSSH, an exec session ends when the command has exited AND its stdout/stderr are
closed: a background job that keeps them open keeps the session open (redirect it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import json
import logging
import os
import posixpath
import signal
import sys
from typing import Any

import asyncssh

from .procs import MARKER, kill_processes

log = logging.getLogger("skyward.container.node")

_CHUNK = 65536
_CLIENT_ENV = ("LANG", "LC_")  # what Debian's sshd accepts (AcceptEnv LANG LC_*)
_NETWORK_ENV = (
    "SSL_CERT_",
    "REQUESTS_CA_BUNDLE",
    "PIP_",
    "UV_",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
)


def _shell() -> str:
    for path in ("/bin/bash", "/usr/bin/bash"):
        if os.access(path, os.X_OK):
            return path
    return "/bin/sh"


def _uv_cache() -> str:
    """The uv cache of this machine's user (uv's own default when none is set)."""
    found = os.environ.get("UV_CACHE_DIR")
    if found:
        return found
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "uv")


class _Node:
    """The node's state shared by its connections."""

    def __init__(
        self, home: str, instance_id: str, extra_env: dict[str, str], host_key: str = ""
    ) -> None:
        self.home = os.path.realpath(home)
        self.instance_id = instance_id
        self.shell = _shell()
        self.connections: set[asyncssh.SSHServerConnection] = set()
        user = getpass.getuser()
        self.env = {
            "HOME": self.home,
            "PATH": ":".join(
                dict.fromkeys(
                    [os.path.dirname(sys.executable), "/usr/local/bin", "/usr/bin", "/bin"]
                )
            ),
            "USER": user,
            "LOGNAME": user,
            "SHELL": self.shell,
            "LANG": "C.UTF-8",
            **{k: v for k, v in os.environ.items() if k.startswith(_NETWORK_ENV)},
            "UV_CACHE_DIR": _uv_cache(),
            **extra_env,
            MARKER: instance_id,
            "SKYWARD_NODE_PID": str(os.getpid()),
            "SKYWARD_HOST_KEY_FILE": os.path.realpath(host_key) if host_key else "",
        }

    def inside(self, path: str) -> str | None:
        """``path`` (relative to the home) made relative to the home, if it lies inside it."""
        full = os.path.realpath(os.path.join(self.home, path))
        if full != self.home and not full.startswith(self.home + os.sep):
            return None
        # Relative to the home (our cwd): a socket path deep in a long home can exceed
        # sun_path's 108 bytes, its relative form does not.
        return os.path.relpath(full, self.home)


class _Server(asyncssh.SSHServer):
    """Auth policy and UNIX-socket forwarding for one connection."""

    def __init__(self, node: _Node) -> None:
        self._node = node
        self._conn: asyncssh.SSHServerConnection | None = None

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn
        self._node.connections.add(conn)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._conn is not None:
            self._node.connections.discard(self._conn)

    def begin_auth(self, username: str) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return False

    def unix_connection_requested(self, dest_path: str) -> Any:
        relative = self._node.inside(dest_path)
        if relative is None or self._conn is None:
            log.warning("refused forwarding to %s: outside the node's directory", dest_path)
            return False
        return self._conn.forward_unix_connection(relative)


class _SFTPServer(asyncssh.SFTPServer):
    """SFTP whose relative paths start at the node's home, as on a real machine."""

    def __init__(self, chan: asyncssh.SSHServerChannel[bytes], home: str) -> None:
        super().__init__(chan)
        self._home = os.fsencode(home)

    def map_path(self, path: bytes) -> bytes:
        return path if path.startswith(b"/") else posixpath.join(self._home, path)


async def _pump_out(reader: asyncio.StreamReader, writer: asyncssh.SSHWriter[bytes]) -> None:
    """Copy a pipe to the channel; once the channel is gone, drain and drop the rest."""
    broken = False
    while chunk := await reader.read(_CHUNK):
        if broken:
            continue
        try:
            writer.write(chunk)
            await writer.drain()
        except (OSError, asyncssh.Error):
            broken = True


async def _pump_in(reader: asyncssh.SSHReader[bytes], proc: asyncio.subprocess.Process) -> None:
    """Copy the channel to the process's stdin; forward signals the client sends."""
    stdin = proc.stdin
    assert stdin is not None  # created with stdin=PIPE
    while True:
        try:
            chunk = await reader.read(_CHUNK)
        except asyncssh.SignalReceived as received:
            with contextlib.suppress(KeyError, ProcessLookupError):
                proc.send_signal(signal.Signals["SIG" + received.signal])
            continue
        except (asyncssh.BreakReceived, asyncssh.TerminalSizeChanged):
            continue
        except (OSError, asyncssh.Error):
            break
        if not chunk:
            break
        try:
            stdin.write(chunk)
            await stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            return
    with contextlib.suppress(OSError):
        stdin.close()


async def _run(node: _Node, process: asyncssh.SSHServerProcess[bytes]) -> None:
    """Serve one exec (or shell) request with a real subprocess."""
    command = process.command
    env = dict(node.env)
    for key, value in process.env.items():
        if isinstance(key, str) and key.startswith(_CLIENT_ENV) and isinstance(value, str):
            env[key] = value
    argv = [node.shell, "-c", command] if command is not None else [node.shell]
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=node.home,
            env=env,
        )
    except OSError as exc:
        process.stderr.write(f"skyward node: cannot start {node.shell}: {exc}\n".encode())
        process.exit(127)
        await process.wait_closed()
        return
    assert proc.stdout is not None and proc.stderr is not None  # PIPEs above
    feeder = asyncio.create_task(_pump_in(process.stdin, proc))
    try:
        await asyncio.gather(
            _pump_out(proc.stdout, process.stdout), _pump_out(proc.stderr, process.stderr)
        )
        code = await proc.wait()
    finally:
        feeder.cancel()
    if code < 0:
        try:
            name = signal.Signals(-code).name.removeprefix("SIG")
        except ValueError:
            name = "KILL"
        process.exit_with_signal(name)
    else:
        process.exit(code)
    await process.wait_closed()


def _write_ready(path: str, info: dict[str, Any]) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(info, f)
    os.replace(tmp, path)


async def serve(args: argparse.Namespace) -> int:
    """Listen, announce readiness, and serve until told to stop."""
    node = _Node(args.dir, args.instance_id, args.extra_env, args.host_key)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, stop.set)

    async def handle(process: asyncssh.SSHServerProcess[bytes]) -> None:
        try:
            await _run(node, process)
        except Exception:  # keep serving other sessions whatever one of them did
            log.exception("session failed")
            with contextlib.suppress(Exception):
                process.exit(255)

    server = await asyncssh.listen(
        args.host,
        args.port,
        server_factory=lambda: _Server(node),
        server_host_keys=[args.host_key],
        authorized_client_keys=args.authorized_keys,
        process_factory=handle,
        sftp_factory=lambda chan: _SFTPServer(chan, node.home),
        encoding=None,
        allow_pty=False,
        agent_forwarding=False,
        x11_forwarding=False,
        allow_scp=False,
        login_timeout=30,
    )

    def reload_host_key() -> None:
        try:
            server.update(server_host_keys=[args.host_key])
            log.info("host key reloaded from %s", args.host_key)
        except Exception:
            log.exception("could not reload the host key")

    loop.add_signal_handler(signal.SIGUSR1, reload_host_key)
    port = server.sockets[0].getsockname()[1]
    _write_ready(
        args.ready or os.path.join(node.home, "ready"),
        {"host": args.host, "port": port, "pid": os.getpid(), "instance_id": args.instance_id},
    )
    log.info("node %s listening on %s:%d", args.instance_id, args.host, port)
    await stop.wait()
    log.info("node %s shutting down", args.instance_id)
    server.close()
    for conn in list(node.connections):
        conn.close()
    left = await asyncio.to_thread(kill_processes, args.instance_id, os.getpid(), 0.5, 5.0)
    if left:
        log.error("processes still alive after shutdown: %s", left)
    return 0


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", required=True, help="the node's home and working directory")
    parser.add_argument("--host", required=True, help="loopback address to listen on")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--host-key", required=True, help="OpenSSH private host key file")
    parser.add_argument("--authorized-keys", required=True, help="authorized_keys file")
    parser.add_argument("--instance-id", required=True)
    parser.add_argument("--ready", default="", help="where to write the ready file")
    parser.add_argument("--env-file", default="", help="JSON object of extra environment")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the node process."""
    args = _parse(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s"
    )
    logging.getLogger("asyncssh").setLevel(logging.WARNING)
    args.extra_env = {}
    if args.env_file:
        with open(args.env_file) as f:
            args.extra_env = {str(k): str(v) for k, v in json.load(f).items()}
    os.chdir(args.dir)
    return asyncio.run(serve(args))


if __name__ == "__main__":
    sys.exit(main())
