"""Warning classes under GPyTorch's module path ``gpytorch.utils.warnings``.

:class:`NumericalWarning` is the same class as :class:`torchgp.errors.NumericalWarning`, so a filter on
either catches torchgp's numerical-recovery warnings.
"""

from __future__ import annotations

from torchgp.errors import NumericalWarning


class GPInputWarning(UserWarning):
    """A GP received an input it did not expect (e.g. an exact GP in eval mode given its training inputs)."""


class OldVersionWarning(UserWarning):
    """A saved model comes from an older version of the library than the one loading it."""


__all__ = ["GPInputWarning", "OldVersionWarning", "NumericalWarning"]
