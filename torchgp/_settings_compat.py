"""GPyTorch settings that change nothing in torchgp, re-exported by :mod:`torchgp.settings`.

Each is accepted with GPyTorch's values so that code written for GPyTorch runs; its docstring says why it
changes nothing in torchgp.
"""

from __future__ import annotations

import torch

from torchgp._settings_base import _DtypeValue, _Flag, _NonNegative, _Positive, _Setting


class memory_efficient(_Flag):
    """Accepted, no effect: it selects Toeplitz arithmetic for GPyTorch's grid inducing-point modules, which
    torchgp does not have; its kernel matrices are always multiplied block by block (``kernel_block_size``)."""


class use_keops(_Flag):
    """Accepted, no effect (default on): torchgp has no KeOps kernels; its kernel matrices are computed in tiles
    that are never held whole, which serves the memory purpose KeOps serves in GPyTorch."""

    _default = True


class skip_logdet_forward(_Flag):
    """Accepted, no effect: the iterative path reads the log-determinant off the Lanczos coefficients of the
    CG run its solve needs anyway (``torchgp.linalg.lanczos``), so skipping it would save only small
    tridiagonal eigendecompositions."""


class terminate_cg_by_size(_Flag):
    """Accepted, no effect: CG stops at ``max_cg_iterations`` or at its tolerance; for an ``n × n`` system
    it cannot usefully run more than ``n`` iterations anyway (exact arithmetic converges in n)."""


class tridiagonal_jitter(_Positive):
    """Accepted, no effect: Lanczos tridiagonal matrices are eigendecomposed without jitter, and their
    eigenvalues are clamped at the smallest positive number of the dtype (``torchgp.linalg.lanczos``)."""

    _default = 1e-6


class min_preconditioning_size(_NonNegative):
    """Accepted, no effect: the iterative path always uses its pivoted-Cholesky preconditioner, whose rank
    is chosen from n (see ``max_preconditioner_size``); it only runs above ``max_cholesky_size`` anyway."""

    _default = 2000


class preconditioner_tolerance(_Positive):
    """Accepted, no effect: the pivoted-Cholesky preconditioner stops by its own trace-error rule
    (``torchgp.linalg.pivoted_cholesky``), not at this tolerance."""

    _default = 1e-3


class _linalg_dtype_symeig(_Setting):
    """Dtype of symmetric eigendecompositions in GPyTorch (default float64); see :class:`linalg_dtypes`."""

    _default = torch.float64


class _linalg_dtype_cholesky(_Setting):
    """Dtype of Cholesky factorisations in GPyTorch (default float64); see :class:`linalg_dtypes`."""

    _default = torch.float64


class linalg_dtypes:
    """Accepted: sets GPyTorch's two linear-algebra dtypes inside the block (readable as
    ``settings._linalg_dtype_cholesky.value()``); torchgp's factorisations run in the matrix's dtype, and
    mixed precision is :class:`solve_dtype`.

    Args:
        default: dtype for both (default float64).
        symeig, cholesky: override one of them.
    """

    def __init__(self, default=torch.float64, symeig=None, cholesky=None):
        self._inner = (
            _linalg_dtype_symeig(symeig if symeig is not None else default),
            _linalg_dtype_cholesky(cholesky if cholesky is not None else default),
        )

    def __enter__(self):
        for setting in self._inner:
            setting.__enter__()
        return self

    def __exit__(self, *exc):
        for setting in reversed(self._inner):
            setting.__exit__(*exc)
        return False


# GPyTorch's base-class names, for code that subclasses them
_feature_flag = _Flag
_value_context = _Setting
_dtype_value_context = _DtypeValue
