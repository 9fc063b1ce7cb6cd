"""The ``aws`` provider: EC2 through boto3 (imported only when the provider is used)."""

from .provider import AwsContext, AwsProvider

__all__ = ["AwsContext", "AwsProvider"]
