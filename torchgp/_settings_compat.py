"""GPyTorch's settings for its KeOps kernels, its iterative solvers and its linear-algebra dtypes, re-exported by
:mod:`torchgp.settings`.

Each takes GPyTorch's values and acts as GPyTorch's does (``skip_logdet_forward``, ``terminate_cg_by_size``,
``min_preconditioning_size``, ``preconditioner_tolerance``, ``tridiagonal_jitter``, ``use_keops``); where a
default differs from GPyTorch's, or where GPyTorch's own flag has nothing to act on (``memory_efficient``), the
class docstring says so and why.
"""

from __future__ import annotations

import torch

from torchgp._settings_base import _DtypeValue, _Flag, _NonNegative, _Positive, _Setting


class memory_efficient(_Flag):
    """Accepted, no effect (default off), as in GPyTorch 1.15, where it changes nothing either.

    ``gpytorch.settings.memory_efficient`` is a flag of its own that no code of GPyTorch 1.15 reads (its docstring,
    "Toeplitz math with gridded data", describes :class:`use_toeplitz`). linear_operator has a different flag of
    the same name, which GPyTorch does not re-export and which its settings do not set: it decides whether
    linear_operator's autograd functions keep the operator object from the forward for the backward or rebuild it
    from the saved tensors. torchgp's backward passes never keep a second copy of an operator's tensors and never
    rebuild one, so there is no choice for this flag to make; the memory of the iterative path is set by
    ``kernel_block_size`` and ``max_dense_memory``.
    """


class use_keops(_Flag):
    """Whether the kernels of :mod:`torchgp.kernels.keops` keep their matrices lazy and tiled (default on).

    On: their matrix is a lazy :class:`~torchgp.linalg.KernelOperator`, multiplied and differentiated tile by tile
    (``kernel_block_size``) and never held whole above :func:`~torchgp.linalg.operators.kernel.dense_product_bytes`.
    Off: as GPyTorch's KeOps kernels fall back to their plain computation, the matrix is evaluated whole (a
    :class:`~torchgp.linalg.DenseOperator`, refused with :class:`~torchgp.errors.KernelMemoryError` above
    ``max_dense_memory``) and differentiated through that dense tensor; the numbers are the same. Other kernels
    do not read it.
    """

    _default = True


class skip_logdet_forward(_Flag):
    """Report the marginal likelihood's log-determinant as 0 in the forward pass, keeping its gradient (default off).

    For training by stochastic gradients only (as GPyTorch warns: not for model selection, MCMC or L-BFGS, which
    need the loss's value). :func:`torchgp.linalg.inv_quad_logdet` then returns zeros for ``log|K|`` whose
    backward is still ``tr(K⁻¹ ∂K)`` (exact on the Cholesky path, the same stochastic estimate on the iterative
    path), so ``-MLL`` under it equals the full loss minus ``½ log|K| / n`` and its gradients are the full ones.
    On the iterative path no Lanczos quadrature runs, and with ``cg_warm_start`` CG runs only the warm-started
    columns (no cold copies of the probes). GPyTorch drops the value only on its iterative path; torchgp on every
    path, so the loss does not jump when n crosses ``max_cholesky_size``.
    """


class terminate_cg_by_size(_Flag):
    """Stop conjugate gradients after at most n iterations for an ``n × n`` system (default off).

    As GPyTorch's ``linear_cg``: the cap is ``min(max_iter, n)``, where ``max_iter`` is the call's cap (default
    ``max_cg_iterations``). In exact arithmetic CG converges in n steps; in floating point an ill-conditioned
    system can need more, and is then reported as not converged (``cg_nonconvergence``).
    """


class tridiagonal_jitter(_Positive):
    """Relative jitter added to Lanczos tridiagonal matrices before a root decomposition's eigendecomposition
    (default 1e-6).

    ``T + ε I`` with ``ε = tridiagonal_jitter · min_j T_jj`` per matrix, GPyTorch's rule, applied by
    :func:`torchgp.linalg.lanczos.jitter_tridiagonal`. As in GPyTorch it belongs where ``A ≈ Q T Qᵀ`` is turned
    into a root ``S Sᵀ`` (``torchgp.models.love.lanczos_root``), not in the stochastic Lanczos quadrature of
    ``log|A|``, where it
    would only bias the estimate (measured: 1.2e-6 relative on a SKI marginal likelihood whose iterative and
    Cholesky values otherwise agree to 1e-6).
    """

    _default = 1e-6


class min_preconditioning_size(_NonNegative):
    """Below this many rows the iterative path uses no pivoted-Cholesky preconditioner (default 0).

    As in GPyTorch, a system smaller than this value is solved by CG without a preconditioner (in torchgp: with the
    noise diagonal only, rank 0). GPyTorch's default is 2000; torchgp's is 0, a preconditioner at every n, because
    the iterative path runs at small n only when ``max_cholesky_size`` is lowered, and there the preconditioner is
    what makes it accurate: measured at n = 500 (RBF, ℓ = 0.2, σ² = 0.05, 32 probes) the MLL's relative error was
    1.3 % without it and below 0.1 % with it (``tests/linalg/test_iterative.py``).
    """

    _default = 0


class preconditioner_tolerance(_Positive):
    """Trace error at which the pivoted-Cholesky preconditioner stops growing its rank (default 1e-3).

    GPyTorch's rule: the factorisation ``L Lᵀ ≈ K`` stops once ``tr(K - L Lᵀ) / max_i K_ii`` is at most this value
    (``torchgp.linalg.pivoted_cholesky.build_preconditioner``), or at its rank cap (``max_preconditioner_size``),
    or once ``tr(K - L Lᵀ)`` is below 10⁻³ times the smallest noise (where more rank cannot save CG iterations),
    whichever comes first.
    """

    _default = 1e-3


class _linalg_dtype_symeig(_Setting):
    """Dtype of symmetric eigendecompositions (default float64); see :class:`linalg_dtypes`."""

    _default = torch.float64


class _linalg_dtype_cholesky(_Setting):
    """Dtype of the variational ``K_zz`` Cholesky factorisations (default float64); see :class:`linalg_dtypes`."""

    _default = torch.float64


class linalg_dtypes:
    """The dtypes of two factorisations, as in GPyTorch (default float64 for both), set inside the block.

    ``symeig``: symmetric eigendecompositions (Kronecker multitask and grid solves, ``torchgp.linalg._lapack.sym_eigh``)
    of narrower matrices run in it; ``cholesky``: the variational strategies factorise ``K_zz`` in it. Results come
    back in the matrix's dtype, so a float32 model gets float64-accurate factors of its small matrices. The
    Cholesky of an exact GP's ``n × n`` matrix runs in its own dtype (mixed precision there is
    :class:`solve_dtype`).

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
