"""The provider's own Batch API: the client, the batch files, the driver.

One job per module: `client` (the HTTP calls to /v1/files and /v1/batches), `lines` (the
input lines squall writes, the result lines it reads), `chunk` (one batch's way from upload
to collected, each step journaled first) and `driver` (a run's passes over its chunks, and
cancelling them). The journal's side is `squall.journal.batches`.
"""

from .client import BatchClient, BatchInfo, RequestCounts
from .driver import BatchDriver, BatchKey, BatchSettings, cancel_batches

__all__ = [
    "BatchClient",
    "BatchDriver",
    "BatchInfo",
    "BatchKey",
    "BatchSettings",
    "RequestCounts",
    "cancel_batches",
]
