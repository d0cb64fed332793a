"""GPyTorch's ``gpytorch.beta_features``: two settings that are accepted and have no effect here."""

from __future__ import annotations

import warnings

from torchgp.settings import _Flag, _NonNegative

__all__ = ["checkpoint_kernel", "default_preconditioner"]


class checkpoint_kernel(_NonNegative):
    """Accepted, no effect (deprecated in GPyTorch, warns ``DeprecationWarning`` when entered): torchgp's
    large kernel matrices are never held whole anyway; they are multiplied in tiles of
    ``settings.kernel_block_size``, which is what checkpointing in ``split_size`` chunks was for.
    """

    _default = 0

    def __enter__(self):
        warnings.warn(
            "beta_features.checkpoint_kernel is deprecated and has no effect: torchgp multiplies large kernel "
            "matrices in tiles (settings.kernel_block_size) without holding them whole.",
            DeprecationWarning,
            stacklevel=2,
        )
        return super().__enter__()


class default_preconditioner(_Flag):
    """Accepted, no effect: the iterative path always uses its pivoted-Cholesky preconditioner."""
