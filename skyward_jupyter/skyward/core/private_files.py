"""Files and folders that only this user may read: keys, the ledger, instance folders.

Folders are created 0700, missing parents included (as the XDG spec asks), so a key is
never briefly readable through a parent made with the login umask. Files are written
0600 from their creation (the mode is given to ``open``, never set afterwards), and
replaced atomically and durably: the data and the folder entry are on disk before a
reader can see the new file, so a crash leaves the old file or the new one, whole.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

__all__ = ["data_dir", "private_dir", "sync_dir", "write_atomically"]


def data_dir() -> Path:
    """Where skyward keeps per-user state (``$XDG_DATA_HOME/skyward``)."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(Path.home(), ".local", "share")
    return Path(base) / "skyward"


def private_dir(path: Path) -> Path:
    """Make ``path`` and any missing parent 0700; return ``path``.

    Folders that already exist are left as they are, except ours (``skyward`` and below
    it), which are tightened to 0700 when an older version made them wider.
    """
    missing: list[Path] = []
    probe = path
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:
            continue  # made by another process meanwhile
        os.chmod(folder, 0o700)  # whatever the umask took away, we need rwx
    ours = data_dir()
    for folder in (path, *path.parents):
        if folder == ours or ours in folder.parents:
            _tighten(folder)
    return path


def _tighten(folder: Path) -> None:
    """0700 for a folder of ours that is wider (never through a symbolic link)."""
    try:
        info = os.lstat(folder)
    except OSError:
        return
    if info.st_uid == os.getuid() and (info.st_mode & 0o077) and not os.path.islink(folder):
        os.chmod(folder, 0o700)


def write_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data``: 0600 from creation, fsynced, then renamed over it.

    The folder is fsynced after the rename so the new entry survives a power cut.
    """
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW
    fd = os.open(temporary, flags, 0o600)
    try:
        try:
            os.fchmod(fd, 0o600)  # the umask may only have removed bits; make it exact
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    sync_dir(path.parent)


def sync_dir(folder: Path) -> None:
    """fsync a folder, so the entries just made or renamed in it are durable."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
