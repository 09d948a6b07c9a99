"""The stream package's errors: one root, flat subclasses that carry what a person needs."""

from __future__ import annotations


class StreamError(Exception):
    """Root of the stream package's errors. `retriable`: trying again may succeed."""

    retriable = False


class StoreUnavailable(StreamError):
    """Redis could not be reached or did not answer in time; nothing of the call was applied.

    A batch script either ran whole or not at all, so retrying the same batch is safe.
    """

    retriable = True

    def __init__(self, operation: str, cause: BaseException) -> None:
        super().__init__(f"Redis unavailable during {operation}: {cause}")
        self.operation = operation
        self.cause = cause


class SpendConflict(StreamError):
    """A spend record kept changing under this worker while it tried to replace it."""

    retriable = True

    def __init__(self, spend_id: str, attempts: int) -> None:
        super().__init__(f"spend record {spend_id} changed concurrently {attempts} times")
        self.spend_id = spend_id
        self.attempts = attempts


class ClusterUnsupported(StreamError):
    """An operation that cluster mode does not do (`keys`, "Redis Cluster")."""

    def __init__(self, operation: str) -> None:
        super().__init__(
            f"{operation} does not work in Redis Cluster mode yet: point ADPULSE_REDIS_URL "
            "(or --redis-url) at one Redis instance (redis://) for it"
        )
        self.operation = operation
