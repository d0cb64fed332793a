"""Error classes under GPyTorch's module path ``gpytorch.utils.errors``.

:class:`NotPSDError` is the same class as :class:`torchgp.errors.NotPSDError`.
"""

from __future__ import annotations

from torchgp.errors import NotPSDError, TorchGPError


class CachingError(TorchGPError, RuntimeError):
    """A value was asked from a cache (:func:`torchgp.utils.cached`) that does not hold it."""


class NanError(TorchGPError, RuntimeError):
    """A matrix or a vector that must be finite contains NaN."""


__all__ = ["CachingError", "NanError", "NotPSDError"]
