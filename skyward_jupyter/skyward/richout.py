"""Rich output on an instance: mime bundles for ``display()``, results and figures.

Standard library only (uploaded beside the agent). It follows IPython's display protocol
(``_repr_mimebundle_``, ``_repr_html_``, ``_repr_png_``, …) without needing IPython on
the instance; matplotlib figures left open by a cell are rendered to PNG, as the inline
backend does in a local kernel.
"""

from __future__ import annotations

import base64
import io
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["bundle", "display", "emit_figures", "install"]

REPRS = (
    ("text/html", "_repr_html_"),
    ("text/markdown", "_repr_markdown_"),
    ("text/latex", "_repr_latex_"),
    ("image/svg+xml", "_repr_svg_"),
    ("image/png", "_repr_png_"),
    ("image/jpeg", "_repr_jpeg_"),
    ("application/json", "_repr_json_"),
    ("application/javascript", "_repr_javascript_"),
)
BINARY = ("image/png", "image/jpeg")

_sink: Callable[[dict[str, Any], dict[str, Any]], None] | None = None


def _safe_repr(obj: Any) -> str:
    try:
        return repr(obj)
    except Exception as exc:
        return f"<{type(obj).__qualname__} with a broken __repr__: {exc!r}>"


def bundle(obj: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(data, metadata)`` for ``obj``: every representation it offers, and text/plain."""
    data: dict[str, Any] = {}
    metadata: dict[str, Any] = {}
    method = getattr(obj, "_repr_mimebundle_", None)
    if callable(method) and not isinstance(obj, type):
        try:
            found = method()
        except Exception:
            found = None
        if isinstance(found, tuple):
            found, meta = found
            metadata.update(meta or {})
        if isinstance(found, dict):
            data.update(found)
    for mime, name in REPRS:
        if mime in data or isinstance(obj, type):
            continue
        method = getattr(obj, name, None)
        if not callable(method):
            continue
        try:
            value = method()
        except Exception:
            continue
        if isinstance(value, tuple):
            value, meta = value
            metadata[mime] = meta
        if value is None:
            continue
        data[mime] = value
    for mime in BINARY:  # Jupyter carries images as base64 text
        if isinstance(data.get(mime), bytes):
            data[mime] = base64.b64encode(data[mime]).decode("ascii")
    data.setdefault("text/plain", _safe_repr(obj))
    return _plain(data), _plain(metadata)


def _plain(value: Any) -> Any:
    """Plain data only (the kernel decodes frames with a class-refusing unpickler)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool | bytes):
        return value
    return str(value)


def display(
    *objs: Any, raw: bool = False, metadata: dict[str, Any] | None = None, **_: Any
) -> None:
    """Show objects in the notebook cell that runs this code (like IPython's display)."""
    for obj in objs:
        if raw and isinstance(obj, dict):
            data, meta = dict(obj), dict(metadata or {})
            for mime in BINARY:
                if isinstance(data.get(mime), bytes):
                    data[mime] = base64.b64encode(data[mime]).decode("ascii")
            data, meta = _plain(data), _plain(meta)
        else:
            data, meta = bundle(obj)
        if _sink is None:
            print(data.get("text/plain", ""))
        else:
            _sink(data, meta)


def emit_figures() -> None:
    """Show and close the matplotlib figures a cell left open (the inline backend's job)."""
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is None:
        return
    for number in pyplot.get_fignums():
        figure = pyplot.figure(number)
        buffer = io.BytesIO()
        try:
            figure.savefig(buffer, format="png", bbox_inches="tight")
        except Exception as exc:
            print(f"skyward: could not render figure {number}: {exc}", file=sys.stderr)
            continue
        display({"image/png": buffer.getvalue(), "text/plain": repr(figure)}, raw=True)
    pyplot.close("all")


def install(sink: Callable[[dict[str, Any], dict[str, Any]], None]) -> None:
    """Send displays to ``sink``; make IPython's ``display`` (if it is imported) do so too."""
    global _sink
    _sink = sink
    patch_ipython()


def patch_ipython() -> None:
    """Point an already imported IPython's display functions at ours (no IPython kernel
    runs on the instance, so IPython's own would only print a repr)."""
    for name in ("IPython.core.display_functions", "IPython.display", "IPython.core.display"):
        module = sys.modules.get(name)
        if module is not None and getattr(module, "display", display) is not display:
            module.display = display
