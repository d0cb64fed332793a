r"""GPyTorch's top-level linear-algebra functions (``gpytorch.inv_quad_logdet``, ``gpytorch.solve``, ...).

Each takes a tensor ``(*batch, n, n)`` or a :class:`~torchgp.linalg.operators.Operator` and runs through the
operator's methods, so the solver is the one :func:`torchgp.linalg.solvers.choose_solver` picks.

Example:
    >>> import torch, torchgp
    >>> A = torch.tensor([[2.0, 0.5], [0.5, 1.0]], dtype=torch.float64)
    >>> quad, logdet = torchgp.inv_quad_logdet(A, torch.ones(2, 1, dtype=torch.float64), logdet=True)
    >>> bool(torch.isclose(logdet, torch.logdet(A)))
    True
"""

from __future__ import annotations

import warnings

import torch

from torchgp.errors import ShapeError
from torchgp.kernels._fused import MaternCovariance, RBFCovariance
from torchgp.linalg.operators import DenseOperator, KernelOperator, Operator, as_operator
from torchgp.linalg.pivoted_cholesky import operator_rows

__all__ = [
    "add_diagonal",
    "add_jitter",
    "dsmm",
    "inv_quad",
    "inv_quad_logdet",
    "logdet",
    "matmul",
    "solve",
    "inv_matmul",
    "root_decomposition",
    "root_inv_decomposition",
    "pivoted_cholesky",
    "sqrt_inv_matmul",
    "log_normal_cdf",
    "RBFCovariance",
    "MaternCovariance",
]


def add_diagonal(input, diag: torch.Tensor) -> Operator:
    """``A + diag(d)`` as an operator; ``input (*batch, n, n)``, ``diag (*batch, n)`` or a scalar."""
    return as_operator(input).add_diagonal(diag)


def add_jitter(input, jitter_val: float = 1e-3):
    """``A + jitter_val · I``: a tensor for a tensor ``(*batch, n, n)``, an operator for an operator."""
    if isinstance(input, torch.Tensor):
        n = input.shape[-1]
        eye = torch.eye(n, dtype=input.dtype, device=input.device)
        return input + jitter_val * eye
    return input.add_jitter(jitter_val)


def dsmm(sparse_mat: torch.Tensor, dense_mat: torch.Tensor) -> torch.Tensor:
    """Sparse ``(*batch, n, m)`` times dense ``(*batch, m, k)`` → dense ``(*batch, n, k)``, differentiable in ``dense_mat``."""
    if not sparse_mat.is_sparse:
        return sparse_mat @ dense_mat
    if sparse_mat.dim() == 2:
        return torch.sparse.mm(sparse_mat, dense_mat)
    if sparse_mat.dim() == 3:
        if dense_mat.dim() == 2:
            dense_mat = dense_mat.expand(sparse_mat.shape[0], *dense_mat.shape)
        return torch.bmm(sparse_mat, dense_mat)
    raise ShapeError(f"dsmm supports sparse matrices of 2 or 3 dimensions; got {tuple(sparse_mat.shape)}.")


def inv_quad_logdet(
    input, inv_quad_rhs: torch.Tensor | None = None, logdet: bool = False, reduce_inv_quad: bool = True
):
    """``(rᵀA⁻¹r, log|A|)``: ``inv_quad (*batch)`` (``(*batch, k)`` unreduced) or None without ``inv_quad_rhs``;
    ``logdet (*batch)`` or None when not asked for.

    Args:
        input: ``(*batch, n, n)`` tensor or operator, positive definite.
        inv_quad_rhs: ``(*batch, n, k)`` (or ``(*batch, n)``).
        logdet: also compute ``log|A|``.
        reduce_inv_quad: sum the quadratic forms over the ``k`` columns.
    """
    return as_operator(input).inv_quad_logdet(inv_quad_rhs, logdet=logdet, reduce_inv_quad=reduce_inv_quad)


def inv_quad(input, inv_quad_rhs: torch.Tensor, reduce_inv_quad: bool = True) -> torch.Tensor:
    """``rᵀA⁻¹r``, ``(*batch)`` (``(*batch, k)`` if not reduced), for ``inv_quad_rhs (*batch, n, k)``."""
    return as_operator(input).inv_quad(inv_quad_rhs, reduce_inv_quad=reduce_inv_quad)


def logdet(mat) -> torch.Tensor:
    """``log|A|``, ``(*batch)``, for a positive definite ``(*batch, n, n)`` tensor or operator."""
    return as_operator(mat).logdet()


def matmul(mat, rhs):
    """``A @ rhs``, ``(*batch, n, m) @ (*batch, m, k) → (*batch, n, k)``."""
    return as_operator(mat).matmul(rhs)


def solve(input, rhs: torch.Tensor, lhs: torch.Tensor | None = None) -> torch.Tensor:
    """``A⁻¹ rhs`` (``rhs (*batch, n, k)`` or ``(n,)``), or ``lhs A⁻¹ rhs`` with ``lhs (*batch, p, n)``."""
    return as_operator(input).solve(rhs, lhs)


def inv_matmul(mat, right_tensor: torch.Tensor, left_tensor: torch.Tensor | None = None) -> torch.Tensor:
    """Deprecated: use :func:`solve` (same arguments, same result)."""
    warnings.warn("torchgp.inv_matmul is deprecated; use torchgp.solve instead.", DeprecationWarning, stacklevel=2)
    return solve(mat, right_tensor, left_tensor)


def root_decomposition(input, method: str | None = None) -> Operator:
    """``A = R Rᵀ`` as a :class:`~torchgp.linalg.operators.LowRankRootOperator` (``.root`` is ``R``, ``(*batch, n, r)``)."""
    return as_operator(input).root_decomposition(method=method)


def root_inv_decomposition(input, initial_vectors=None, test_vectors=None, method: str | None = None) -> Operator:
    """``A⁻¹ = R Rᵀ`` as a :class:`~torchgp.linalg.operators.LowRankRootOperator`, ``R (*batch, n, n)``."""
    return as_operator(input).root_inv_decomposition(initial_vectors, test_vectors, method=method)


def sqrt_inv_matmul(input, rhs: torch.Tensor, lhs: torch.Tensor | None = None):
    """``A^{-1/2} rhs``; with ``lhs``, ``(lhs A^{-1/2} rhs, diag(lhs A⁻¹ lhsᵀ))`` (``(*batch, p, k)``, ``(*batch, p)``)."""
    return as_operator(input).sqrt_inv_matmul(rhs, lhs)


def pivoted_cholesky(input, rank: int, error_tol: float | None = None, return_pivots: bool = False):
    r"""Rank-``rank`` pivoted Cholesky factor ``L (*batch, n, k)`` with ``L Lᵀ ≈ A`` (Harbrecht et al. 2012, Alg. 1).

    Pivots are chosen greedily (largest residual diagonal) without a graph; the factor is then
    ``L = A[:, π] L_ππ^{-ᵀ}`` with ``L_ππ = chol(A[π, π])`` (the same columns the greedy recursion builds),
    so it is differentiable with respect to ``A``.

    Args:
        input: ``(*batch, n, n)`` positive semi-definite tensor or operator.
        rank: the number of columns ``k`` (at most ``n``).
        error_tol: stop early once the residual trace is below ``error_tol · tr A`` in every batch member.
        return_pivots: also return the permutation ``(*batch, n)`` whose first ``k`` entries are the pivots.

    Returns:
        ``L``, or ``(L, pivots)``.
    """
    op = as_operator(input)
    batch, n = op.batch_shape, op.shape[-1]
    k = min(int(rank), n)
    rows_op = op if isinstance(op, (DenseOperator, KernelOperator)) else DenseOperator(op.to_dense())
    with torch.no_grad():
        d = op.diagonal().detach().expand(*batch, n).clone()
        trace = d.sum(-1)
        perm = torch.arange(n, device=op.device).expand(*batch, n).clone()
        cols = torch.zeros(*batch, n, k, dtype=op.dtype, device=op.device)
        m = 0
        while m < k:
            if error_tol is not None and bool((d.clamp_min(0).sum(-1) <= error_tol * trace).all()):
                break
            # argmax of the residual among the positions not yet pivoted (the permutation's tail).
            tail = d.gather(-1, perm[..., m:])
            j = tail.argmax(-1) + m
            pm, pj = perm[..., m].clone(), perm.gather(-1, j[..., None]).squeeze(-1)
            perm[..., m] = pj
            perm.scatter_(-1, j[..., None], pm[..., None])
            row = operator_rows(rows_op, pj).to(op.dtype)  # (*batch, n)
            if m > 0:
                row = (
                    row
                    - (cols[..., :m] @ cols[..., :m].gather(-2, pj[..., None, None].expand(*batch, 1, m)).mT)[..., 0]
                )
            piv = d.gather(-1, pj[..., None]).clamp_min(torch.finfo(op.dtype).tiny).sqrt()
            cols[..., m] = row / piv
            d = d - cols[..., m].square()
            m += 1
    pivots = perm[..., :m]
    # Differentiable factor from the chosen pivots: L = A[:, π] chol(A[π, π])^{-ᵀ}.
    A_cols = _columns(op, pivots)  # (*batch, n, m)
    A_pp = A_cols.gather(-2, pivots[..., None].expand(*batch, m, m))
    from torchgp.linalg.cholesky import psd_safe_cholesky

    L_pp = psd_safe_cholesky(A_pp)
    L = torch.linalg.solve_triangular(L_pp, A_cols.mT, upper=False).mT
    return (L, perm) if return_pivots else L


def _columns(op: Operator, idx: torch.Tensor) -> torch.Tensor:
    """Columns ``A[..., :, idx]`` ``(*batch, n, m)`` for per-batch indices ``idx (*batch, m)``, differentiable."""
    batch, n, m = op.batch_shape, op.shape[-1], idx.shape[-1]
    if isinstance(op, KernelOperator) and len(batch) == 0:
        return op.kernel.evaluate_block(op.x1, op.x2[..., idx, :], **op.params)
    A = op.to_dense().expand(*batch, n, n)
    return A.gather(-1, idx[..., None, :].expand(*batch, n, m))


def log_normal_cdf(x: torch.Tensor) -> torch.Tensor:
    r"""``log Φ(x)``, element-wise, accurate in the far lower tail and differentiable.

    .. math:: \log\Phi(x) = \log\tfrac12\operatorname{erfc}(-x/\sqrt2),\qquad
        \frac{d}{dx}\log\Phi(x) = \frac{\phi(x)}{\Phi(x)}

    computed by ``torch.special.log_ndtr`` (its asymptotic series below ``x ≈ -5``, where ``Φ`` underflows);
    the derivative is the inverse Mills ratio, finite for every finite ``x``.
    """
    x = torch.as_tensor(x)
    if not x.is_floating_point():
        x = x.to(torch.get_default_dtype())
    return torch.special.log_ndtr(x)
