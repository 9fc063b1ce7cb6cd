"""The ``verda`` provider (formerly DataCrunch): GPU VMs through Verda's REST API."""

from .provider import DEFAULT_IMAGE, VerdaProvider

__all__ = ["DEFAULT_IMAGE", "VerdaProvider"]
