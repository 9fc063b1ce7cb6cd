"""Secrets the user hands to ``up``: where they may go, and what shows instead.

``--env`` values and ``.env`` files hold tokens. Their values never enter the cluster spec
(so never an event, a repr, the ledger or a command line): the spec keeps the names, and
the values travel once, over the agent channel, in its ``Configure`` message. Credentials
inside ``--pip`` URLs (``git+https://user:token@host/...``) are masked wherever shown.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

__all__ = ["mask_url_credentials", "read_env_file"]

_CREDENTIALS = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]+@")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def mask_url_credentials(text: str) -> str:
    """``https://user:token@host/x`` → ``https://***@host/x``, anywhere in ``text``."""
    return _CREDENTIALS.sub(r"\g<scheme>***@", text)


def read_env_file(path: str | Path) -> dict[str, str]:
    """``KEY=VALUE`` lines of a ``.env`` file (``export``, quotes and ``#`` comments as a
    shell reads them); ``ValueError`` naming the line that is neither."""
    values: dict[str, str] = {}
    for number, raw in enumerate(Path(path).read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line.removeprefix("export ").lstrip()
        key, sep, rest = line.partition("=")
        key = key.strip()
        if not sep or not _NAME.fullmatch(key):
            raise ValueError(f"{path}, line {number}: not KEY=VALUE")
        try:
            words = shlex.split(rest, comments=True)
        except ValueError as exc:
            raise ValueError(f"{path}, line {number}: {exc}") from None
        values[key] = " ".join(words)
    return values
