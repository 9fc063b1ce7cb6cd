"""The supervisor's listening UNIX socket. Standard library only."""

from __future__ import annotations

import os
import socket

__all__ = ["bind"]


def bind(path: str) -> socket.socket:
    """Listen on ``path``, owner-only; a socket left by an earlier agent is replaced.

    The socket is bound under a temporary name and renamed into place once it listens,
    so whoever polls for ``path`` can connect as soon as it exists. Names are bound
    relative to their folder (no other thread runs yet), as a deep home can make the full
    path longer than the 108 bytes a socket address holds.
    """
    folder, name = os.path.split(os.path.abspath(path))
    os.makedirs(folder, mode=0o700, exist_ok=True)
    temporary = f".{name}.{os.getpid()}"
    cwd = os.getcwd()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    umask = os.umask(0o177)
    os.chdir(folder)
    try:
        if os.path.lexists(temporary):
            os.unlink(temporary)
        listener.bind(temporary)
        os.chmod(temporary, 0o600)
        listener.listen(8)
        os.replace(temporary, name)
    finally:
        os.chdir(cwd)
        os.umask(umask)
    return listener
