"""The live panel: a pure fold of the event stream (``state``), its batched sync to the
browser (``sync``), and the anywidget that shows it (``widget``, imported lazily: it
pulls in ipywidgets)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .state import LogRing, MetricSeries, PanelState, apply, replay

if TYPE_CHECKING:
    from .widget import Panel, PanelWidget

__all__ = ["LogRing", "MetricSeries", "Panel", "PanelState", "PanelWidget", "apply", "replay"]


def __getattr__(name: str) -> Any:
    if name in ("Panel", "PanelWidget"):
        from . import widget

        return getattr(widget, name)
    raise AttributeError(name)
