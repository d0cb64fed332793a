"""The error raised when a process of the group is lost."""

from __future__ import annotations

from torchgp.errors import TorchGPError

__all__ = ["RankLostError"]


class RankLostError(TorchGPError, RuntimeError):
    """A collective failed because another rank died or stopped answering within the collective timeout.

    Attributes:
        lost_ranks: the ranks that did not report back (empty when they could not be determined).
        timeout: the collective timeout in seconds.
    """

    def __init__(self, message: str, lost_ranks: tuple[int, ...] = (), timeout: float | None = None):
        super().__init__(message)
        self.lost_ranks = tuple(lost_ranks)
        self.timeout = timeout
