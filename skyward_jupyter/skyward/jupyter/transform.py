"""Rewrites ``%skyward`` lines and ``%%skyward`` cells into top-level ``await``.

Magics cannot be coroutines, and a magic that blocked would freeze the kernel's loop
(and with it every streamed line and panel update). So before IPython sees them, these
lines become ``await dispatch(args, cell)``, which the kernel runs as a coroutine on its
own loop.
"""

from __future__ import annotations

__all__ = ["rewrite"]

TARGET = "__import__('skyward.jupyter.extension', fromlist=['dispatch']).dispatch"


def _call(args: str, cell: str | None) -> str:
    return f"await {TARGET}({args!r}, {cell!r})"


def rewrite(lines: list[str]) -> list[str]:
    """An IPython cleanup transformer: lines in, lines out."""
    if not lines:
        return lines
    first = lines[0].lstrip()
    if first.startswith("%%skyward") and (len(first) == 9 or first[9] in " \t\n"):
        args = first[len("%%skyward") :].strip()
        if args.endswith("?"):
            return lines
        return [_call(args, "".join(lines[1:])) + "\n"]
    out: list[str] = []
    for line in lines:
        stripped = line.lstrip()
        head = stripped.rstrip("\n")
        if head.startswith("%skyward") and (len(head) == 8 or head[8] in " \t"):
            args = head[len("%skyward") :].strip()
            if not args.endswith("?"):
                indent = line[: len(line) - len(stripped)]
                out.append(indent + _call(args, None) + "\n")
                continue
        out.append(line)
    return out
