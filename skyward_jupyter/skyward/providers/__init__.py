"""Providers: one module per ``ProviderName`` behind the protocol of ``core.provider``.

A provider is imported only when asked for, so that a cloud SDK costs nothing until used,
and no provider imports another. Each factory below names its provider's context type,
so the type checker holds every provider to the protocol.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..core.provider import Provider
from ..errors import UsageError
from ..model import ClusterSpec

if TYPE_CHECKING:
    from .aws import AwsContext
    from .container.common import NodeCluster
    from .gcp import GcpContext
    from .httpcloud import CloudCluster
    from .vastai.provider import VastCluster
    from .verda.provider import VerdaCluster

__all__ = ["PROVIDERS", "get_provider", "provider_for"]


def _container(**options: Any) -> Provider[NodeCluster]:
    from .container import ContainerProvider

    return ContainerProvider(**options)


def _runpod(**options: Any) -> Provider[CloudCluster]:
    from .runpod import RunPodProvider

    return RunPodProvider(**options)


def _vastai(**options: Any) -> Provider[VastCluster]:
    from .vastai import VastProvider

    return VastProvider(**options)


def _verda(**options: Any) -> Provider[VerdaCluster]:
    from .verda import VerdaProvider

    return VerdaProvider(**options)


def _aws(**options: Any) -> Provider[AwsContext]:
    from .aws import AwsProvider

    return AwsProvider(**options)


def _gcp(**options: Any) -> Provider[GcpContext]:
    from .gcp import GcpProvider

    return GcpProvider(**options)


PROVIDERS: dict[str, Callable[..., Provider[Any]]] = {
    "container": _container,
    "runpod": _runpod,
    "vastai": _vastai,
    "verda": _verda,
    "aws": _aws,
    "gcp": _gcp,
}
"""Provider name -> the factory that imports and builds it."""


def get_provider(name: str, **options: Any) -> Provider[Any]:
    """An instance of the provider called ``name``, built with ``options``."""
    try:
        factory = PROVIDERS[name]
    except KeyError:
        known = ", ".join(sorted(PROVIDERS))
        raise UsageError(f"unknown provider '{name}': available are {known}") from None
    return factory(**options)


def provider_for(name: str, spec: ClusterSpec) -> Provider[Any]:
    """The provider ``name`` built with the options of ``spec`` (the one place that
    knows which of them a provider takes: ``container`` its runtime)."""
    if name == "container":
        return get_provider(name, runtime=spec.runtime)
    return get_provider(name)
