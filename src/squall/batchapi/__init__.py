"""The provider's own Batch API: the client, the batch files, the driver."""

from .client import BatchClient, BatchInfo, RequestCounts

__all__ = ["BatchClient", "BatchInfo", "RequestCounts"]
