"""Debug records of the linear algebra under ``settings.verbose_linalg``, on the ``torchgp.linalg`` logger.

Each call site passes a format string and its arguments; nothing is formatted unless the flag is on (the check is
one context-variable read), so the records cost nothing on the hot path otherwise.
"""

from __future__ import annotations

from torchgp import settings

__all__ = ["debug", "shape"]


def debug(msg: str, *args) -> None:
    """Log ``msg % args`` at DEBUG on ``settings.verbose_linalg.logger`` when ``settings.verbose_linalg`` is on."""
    if settings.verbose_linalg.on():
        settings.verbose_linalg.logger.debug(msg, *args)


def shape(x) -> str:
    """``"(a, b, c)"`` for a tensor or operator's shape (for the records)."""
    return str(tuple(x.shape))
