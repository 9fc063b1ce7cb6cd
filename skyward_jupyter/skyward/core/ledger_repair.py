"""What can still be read from a damaged ledger file, and how the user is told.

A ledger that no longer parses (cut short by a full disk, a crash of an older version,
a bad edit) still holds the instances someone pays for. Salvage is best-effort and
never guesses: an entry comes back only if its whole JSON object parses and names
itself (its ``key`` field equals the key it is stored under); every other instance id
the text still shows is listed for the user to check by hand.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["LedgerDamage", "Salvage", "salvage"]

_ENTRY_START = re.compile(r'"((?:[^"\\]|\\.)*)"\s*:\s*\{')
_INSTANCE_ID = re.compile(r'"instance_id"\s*:\s*"((?:[^"\\\n]|\\.)*)("?)')
_SHOWN = 6  # instance ids named in the one line; the rest are counted


@dataclass(slots=True)
class Salvage:
    """The entries recovered whole, and the instance ids seen only in broken parts."""

    entries: dict[str, dict[str, Any]] = field(default_factory=dict)
    fragments: list[str] = field(default_factory=list)


def salvage(text: str) -> Salvage:
    """Every whole entry of ``text``, wherever the damage is; then the leftover ids.

    Each ``"KEY": {`` is tried as the start of an entry, so entries after a damaged one
    come back too, not only those before it. A truncated id is shown with a trailing ``…``.
    """
    decoder = json.JSONDecoder()
    found = Salvage()
    covered: list[tuple[int, int]] = []
    position = 0
    while (match := _ENTRY_START.search(text, position)) is not None:
        start = match.end() - 1
        try:
            key = json.loads(f'"{match.group(1)}"')
            value, end = decoder.raw_decode(text, start)
        except ValueError:
            position = match.end()
            continue
        if isinstance(value, dict) and value.get("key") == key:
            found.entries[key] = value
            covered.append((start, end))
            position = end
        else:
            position = match.end()
    for match in _INSTANCE_ID.finditer(text):
        if any(start <= match.start() < end for start, end in covered):
            continue
        instance_id = match.group(1) + ("" if match.group(2) else "…")
        if instance_id.strip("…") and instance_id not in found.fragments:
            found.fragments.append(instance_id)
    return found


@dataclass(frozen=True, slots=True)
class LedgerDamage:
    """A damaged ledger found by this process: where it was kept, what came back."""

    kept_as: Path
    reason: str
    restored: tuple[str, ...]  # instance ids (or entry keys, before a launch) recovered whole
    fragments: tuple[str, ...]  # instance ids seen only in parts that do not parse

    def describe(self) -> str:
        """The one line the user reads at ``%load_ext`` and in ``%skyward status``."""
        line = f"skyward: the ledger was damaged ({self.reason}); kept it as {self.kept_as}; "
        if self.restored:
            line += f"restored {len(self.restored)} entr{'y' if len(self.restored) == 1 else 'ies'}"
            line += f" ({_names(self.restored)})"
        else:
            line += "no entry could be restored"
        if self.fragments:
            line += (
                f"; check by hand, in the provider's console, {_names(self.fragments)}: "
                "their entries are broken"
            )
        return line


def _names(ids: tuple[str, ...]) -> str:
    shown = ", ".join(ids[:_SHOWN])
    return shown + (f" and {len(ids) - _SHOWN} more" if len(ids) > _SHOWN else "")
