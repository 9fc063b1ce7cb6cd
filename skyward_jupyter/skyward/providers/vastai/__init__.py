"""The ``vastai`` provider: marketplace GPU machines through Vast.ai's REST API."""

from .provider import DEFAULT_IMAGE, VastProvider

__all__ = ["DEFAULT_IMAGE", "VastProvider"]
