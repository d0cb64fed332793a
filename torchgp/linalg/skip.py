r"""SKIP (Gardner et al. 2018, "Product kernel interpolation for scalable Gaussian processes"): a product kernel
``K = K_1 ∘ … ∘ K_d`` (element-wise) of interpolated one-dimensional kernels ``K_i = W_i K_UU,i W_iᵀ``, kept low
rank so that no ``n × n`` matrix is ever formed.

Each factor is replaced by its rank-``r`` Lanczos projection (:func:`torchgp.linalg.lanczos_root.lanczos`)

.. math:: K_i \approx Q_i T_i Q_i^\top,\qquad T_i = Q_i^\top K_i Q_i\ (r \times r),

and the Hadamard product of two such factors is multiplied without forming its rank-``r²`` root
(Gardner et al. 2018, §3.2):

.. math:: \big[(Q_1 T_1 Q_1^\top) \circ (Q_2 T_2 Q_2^\top)\big] v
    = \operatorname{rowsum}\big((Q_1 T_1 M T_2) \odot Q_2\big),\qquad M = Q_1^\top \operatorname{diag}(v)\, Q_2,

``O(n r²)`` per column. Lanczos on that product recompresses it to rank ``r`` again (``T = Qᵀ (K_1 ∘ K_2) Q``),
and so on through the ``d`` factors: ``O(d n r³)`` in all, memory ``O(n r + r³)``.

Gradients: the bases ``Q`` are computed without a graph, the cores ``T = Qᵀ K Q`` with one (through the factors'
own products), so the hyperparameters' gradients are those of the projected kernel ``Q Qᵀ K Q Qᵀ``, which tend to
the exact ones as ``r`` grows. The result, :class:`LowRankCoreOperator` ``Q T Qᵀ``, is solved by CG through its
products (:mod:`torchgp.linalg.structured_solve`), in at most ``r + 1`` iterations.
"""

from __future__ import annotations

import torch

from torchgp._shapes import broadcast_shapes
from torchgp.errors import ShapeError
from torchgp.linalg.lanczos_root import lanczos
from torchgp.linalg.operators import Operator
from torchgp.linalg.toeplitz import index_batch

__all__ = ["LowRankCoreOperator", "HadamardLowRankOperator", "lanczos_projection", "skip_product"]


class LowRankCoreOperator(Operator):
    r"""``Q T Qᵀ`` with ``Q (*batch, n, r)`` (orthonormal columns from Lanczos) and a symmetric core ``T (*batch, r, r)``.

    Shapes:
        ``(*batch, n, n)``; ``matmul``: ``(*batch, n, t) → (*batch, n, t)`` in ``O(n r t)``.
    """

    def __init__(self, Q: torch.Tensor, T: torch.Tensor):
        if Q.dim() < 2 or T.shape[-2:] != (Q.shape[-1], Q.shape[-1]):
            raise ShapeError(
                f"LowRankCoreOperator needs Q (*batch, n, r) and T (*batch, r, r); got {tuple(Q.shape)}, {tuple(T.shape)}."
            )
        self.Q, self.core = Q, T
        batch = broadcast_shapes(Q.shape[:-2], T.shape[:-2])
        self.shape = torch.Size([*batch, Q.shape[-2], Q.shape[-2]])
        self.dtype, self.device = T.dtype, T.device

    def _dense(self):
        return (self.Q @ self.core @ self.Q.mT).expand(self.shape)

    def _matmul(self, rhs):
        return self.Q @ (self.core @ (self.Q.mT @ rhs))

    def diagonal(self, offset: int = 0, dim1: int = -2, dim2: int = -1):
        """``diag(Q T Qᵀ)_i = Σ_ab Q_ia T_ab Q_ib``, ``(*batch, n)``."""
        if (offset, dim1 % self.dim(), dim2 % self.dim()) != (0, self.dim() - 2, self.dim() - 1):
            return super().diagonal(offset, dim1, dim2)
        return ((self.Q @ self.core) * self.Q).sum(-1).expand(self.shape[:-1])

    def _tensors(self):
        return [self.Q, self.core]

    def _map(self, fn):
        return LowRankCoreOperator(fn(self.Q), fn(self.core))

    def _transpose(self):
        return self

    def _expand(self, batch_shape):
        return LowRankCoreOperator(
            self.Q.expand(*batch_shape, *self.Q.shape[-2:]), self.core.expand(*batch_shape, *self.core.shape[-2:])
        )

    def _getitem_batch(self, batch_idx):
        b = self.batch_shape
        return LowRankCoreOperator(index_batch(self.Q, b, batch_idx, 2), index_batch(self.core, b, batch_idx, 2))

    def _getitem_slices(self, rows, cols):
        if rows == cols:
            return LowRankCoreOperator(self.Q[..., rows, :], self.core)
        return super()._getitem_slices(rows, cols)

    def _scale(self, c):
        c = torch.as_tensor(c, dtype=self.dtype, device=self.device)
        return LowRankCoreOperator(self.Q, self.core * c.reshape(*c.shape, 1, 1))


class HadamardLowRankOperator(Operator):
    r"""``(Q_1 T_1 Q_1ᵀ) ∘ (Q_2 T_2 Q_2ᵀ)`` multiplied in ``O(n r_1 r_2)`` per column (module docstring).

    Args:
        a, b: :class:`LowRankCoreOperator` factors of one shape ``(*batch, n, n)``.
    """

    def __init__(self, a: LowRankCoreOperator, b: LowRankCoreOperator):
        if a.shape[-1] != b.shape[-1]:
            raise ShapeError(f"HadamardLowRankOperator: factors of sizes {a.shape[-1]} and {b.shape[-1]}.")
        self.a, self.b = a, b
        self.shape = torch.Size([*broadcast_shapes(a.batch_shape, b.batch_shape), *a.shape[-2:]])
        self.dtype, self.device = a.dtype, a.device

    def _matmul(self, rhs):
        Q1, T1, Q2, T2 = self.a.Q, self.a.core, self.b.Q, self.b.core
        n, t = rhs.shape[-2], rhs.shape[-1]
        rows = _row_block(n, Q1.shape[-1] * Q2.shape[-1] * t)
        M = 0
        for s in range(0, n, rows):  # M_t = Q_1ᵀ diag(v_t) Q_2, (t, r1, r2), summed over row blocks
            sl = slice(s, s + rows)
            M = M + torch.einsum("...na,...nt,...nb->...tab", Q1[..., sl, :], rhs[..., sl, :], Q2[..., sl, :])
        N = T1.unsqueeze(-3) @ M @ T2.unsqueeze(-3)  # T_1 M T_2 (both symmetric)
        out = [
            torch.einsum("...na,...tab,...nb->...nt", Q1[..., s : s + rows, :], N, Q2[..., s : s + rows, :])
            for s in range(0, n, rows)
        ]
        return torch.cat(out, -2)

    def project(self, Q: torch.Tensor) -> torch.Tensor:
        r"""``Qᵀ (A ∘ B) Q`` for ``Q (*batch, n, r)`` without a graph through ``n``-sized tensors:

        .. math:: [Q^\top (A \circ B) Q]_{cd} = \sum G_{cab} (T_1)_{aa'} (T_2)_{bb'} G_{da'b'},\qquad
            G_{cab} = \sum_i Q_{ic} (Q_1)_{ia} (Q_2)_{ib},

        ``G`` (``r × r_1 × r_2``) from the constant bases in row blocks, then ``O(r r_1 r_2 (r_1 + r_2 + r))``
        with the cores, so the graph holds ``O(r³)`` numbers whatever ``n``. ``(*batch, r, r)``.
        """
        Q1, T1, Q2, T2 = self.a.Q, self.a.core, self.b.Q, self.b.core
        n = Q.shape[-2]
        rows = _row_block(n, Q.shape[-1] * Q1.shape[-1])
        with torch.no_grad():
            G = 0
            for s in range(0, n, rows):
                sl = slice(s, s + rows)
                G = G + torch.einsum("...nc,...na,...nb->...cab", Q[..., sl, :], Q1[..., sl, :], Q2[..., sl, :])
        GT = torch.einsum("...cab,...aA,...bB->...cAB", G, T1, T2)
        return torch.einsum("...cAB,...dAB->...cd", GT, G)

    def _dense(self):
        return self.a.to_dense() * self.b.to_dense()

    def diagonal(self, offset: int = 0, dim1: int = -2, dim2: int = -1):
        if (offset, dim1 % self.dim(), dim2 % self.dim()) != (0, self.dim() - 2, self.dim() - 1):
            return super().diagonal(offset, dim1, dim2)
        return self.a.diagonal() * self.b.diagonal()

    def _tensors(self):
        return [*self.a._tensors(), *self.b._tensors()]

    def _map(self, fn):
        return HadamardLowRankOperator(self.a._map(fn), self.b._map(fn))

    def _transpose(self):
        return self


# Numbers in one row block's temporary of the Hadamard products (rows × r_1 × r_2 × columns): 4 M.
_BLOCK_NUMEL = 1 << 22


def _row_block(n: int, per_row: int) -> int:
    return max(1, min(n, _BLOCK_NUMEL // max(1, per_row)))


def lanczos_projection(op: Operator, rank: int) -> LowRankCoreOperator:
    """``Q T Qᵀ ≈ op`` for a symmetric PSD ``op (*batch, n, n)``: ``Q`` from ``rank`` Lanczos steps (no graph),
    ``T = Qᵀ op Q`` through ``op``'s products (with a graph), ``(*batch, n, rank)`` and ``(*batch, rank, rank)``."""
    n = op.shape[-1]
    with torch.no_grad():
        detached = op.detach()
        Q, _ = lanczos(detached.matmul, op.batch_shape, n, rank, op.dtype, op.device)
    T = op.project(Q) if isinstance(op, HadamardLowRankOperator) else Q.mT @ op.matmul(Q)
    return LowRankCoreOperator(Q, 0.5 * (T + T.mT))


def skip_product(factors: Operator, rank: int, dim: int = -3) -> LowRankCoreOperator:
    r"""The SKIP approximation of ``∏_i factors[i]`` (element-wise over the batch dimension ``dim``).

    Args:
        factors: symmetric PSD operators stacked in a batch, ``(*batch, d, n, n)`` (``dim`` the ``d`` axis), e.g.
            the interpolated one-dimensional kernels ``W_i K_UU,i W_iᵀ`` of a ``ProductStructureKernel``.
        rank: ``r``, the rank of every projection (``settings.max_root_decomposition_size``).

    Returns:
        ``Q T Qᵀ`` ``(*batch, n, n)`` of rank ``≤ r``.
    """
    d = factors.shape[dim]
    dim = dim % factors.dim()
    projected = lanczos_projection(factors, rank)  # every factor at once, batched over d

    def factor(i):
        sel = (*([slice(None)] * dim), i)
        return LowRankCoreOperator(projected.Q[sel], projected.core[sel])

    acc = factor(0)
    for i in range(1, d):
        acc = lanczos_projection(HadamardLowRankOperator(acc, factor(i)), rank)
    return acc
