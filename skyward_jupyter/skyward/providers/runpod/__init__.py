"""The ``runpod`` provider: GPU pods through RunPod's GraphQL API (see ``provider``)."""

from .provider import DEFAULT_IMAGE, RunPodProvider

__all__ = ["DEFAULT_IMAGE", "RunPodProvider"]
