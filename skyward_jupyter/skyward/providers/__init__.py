"""Providers: one module per ``ProviderName`` behind the protocol of ``core.provider``.

A provider is imported only when asked for, so that a cloud SDK costs nothing until used,
and no provider imports another.
"""

from __future__ import annotations

import importlib
from typing import Any

from ..errors import UsageError

__all__ = ["PROVIDERS", "get_provider"]

PROVIDERS: dict[str, tuple[str, str]] = {
    "container": ("skyward.providers.container", "ContainerProvider"),
    "runpod": ("skyward.providers.runpod", "RunPodProvider"),
    "vastai": ("skyward.providers.vastai", "VastProvider"),
    "verda": ("skyward.providers.verda", "VerdaProvider"),
    "aws": ("skyward.providers.aws", "AwsProvider"),
    "gcp": ("skyward.providers.gcp", "GcpProvider"),
}
"""Provider name -> (module, class), imported lazily."""


def get_provider(name: str, **options: Any) -> Any:
    """An instance of the provider called ``name``, built with ``options``."""
    try:
        module_name, class_name = PROVIDERS[name]
    except KeyError:
        known = ", ".join(sorted(PROVIDERS))
        raise UsageError(f"unknown provider '{name}': available are {known}") from None
    return getattr(importlib.import_module(module_name), class_name)(**options)
