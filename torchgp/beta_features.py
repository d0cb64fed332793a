"""GPyTorch's ``gpytorch.beta_features``: ``checkpoint_kernel`` (accepted, no effect) and ``default_preconditioner``."""

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
    """Give iterative solves that have no preconditioner a randomized low-rank one (default off).

    GPyTorch's flag: an operator whose own preconditioner is absent gets, for its solves (not for the
    log-determinant), a preconditioner built from a randomized range of the matrix. In torchgp the iterative path
    has its pivoted-Cholesky preconditioner except below ``settings.min_preconditioning_size``; there, under this
    flag, :func:`torchgp.linalg.iterative.iterative_solve` (predictions, fantasies) uses the randomized Nyström
    preconditioner (:mod:`torchgp.linalg.nystrom_preconditioner`; Frangella, Tropp & Udell 2023), which unlike
    GPyTorch's low-rank pseudo-inverse stays positive definite at any rank.
    """
