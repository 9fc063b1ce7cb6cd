"""The ``gcp`` provider: Compute Engine through google-cloud-compute (imported when used)."""

from .provider import GcpContext, GcpProvider

__all__ = ["GcpContext", "GcpProvider"]
