r"""Blocks in interleaved row order: :class:`BlockInterleavedOperator`.

Blocks ``K (*batch, t, n, m)`` are seen as the ``(*batch, n t, m t)`` matrix

.. math:: A[(i, a), (j, b)] = \delta_{ab}\, K_a[i, j],\qquad \text{row } (i, a) = i t + a,

the block-diagonal matrix ``diag(K_1, …, K_t)`` with its rows and columns permuted from task-major
(``a n + i``) to interleaved (``i t + a``) order: ``A = P diag(K_a) Pᵀ``. Products, diagonals, solves,
log-determinants and Cholesky factors therefore go block by block (the permutation is a reshape and a
transpose of the right-hand side); the ``nt × nt`` matrix is formed only when asked for.
"""

from __future__ import annotations

import torch

from torchgp._shapes import broadcast_shapes
from torchgp.linalg.cholesky import psd_safe_cholesky
from torchgp.linalg.operators.base import Operator
from torchgp.linalg.operators.basic import DenseOperator
from torchgp.linalg.operators.kronecker import _BlockStack


def _point_slice(s: slice, size: int, t: int) -> slice | None:
    """A slice of interleaved rows that takes whole points (``start``, ``stop`` multiples of ``t``, step 1) as a
    slice of points, else None."""
    start, stop, step = s.indices(size)
    if step != 1 or start % t or stop % t or stop < start:
        return None
    return slice(start // t, stop // t)


def _index_tensor(i, size: int, device) -> torch.Tensor:
    """A row or column index (int, slice or long tensor) as a long tensor of positions."""
    if isinstance(i, slice):
        return torch.arange(size, device=device)[i]
    return torch.as_tensor(i, device=device).long() % size


class BlockInterleavedOperator(_BlockStack, Operator):
    """Blocks ``(*batch, t, n, m)`` seen as one interleaved matrix ``(*batch, n t, m t)`` (see the module docstring).

    Args:
        base: an operator or tensor of blocks, ``(*batch, t, n, m)``.
        block_dim: the dimension of ``base`` that indexes the blocks (GPyTorch's argument; default ``-3``).

    Example:
        >>> import torch
        >>> K = torch.stack([torch.eye(2), 2 * torch.ones(2, 2)])  # t = 2 blocks, n = 2 points
        >>> BlockInterleavedOperator(K).to_dense()
        tensor([[1., 0., 0., 0.],
                [0., 2., 0., 2.],
                [0., 0., 1., 0.],
                [0., 2., 0., 2.]])
    """

    def __init__(self, base, block_dim: int = -3):
        if isinstance(base, torch.Tensor):
            base = DenseOperator(base)
        elif not isinstance(base, Operator):
            raise TypeError(
                f"BlockInterleavedOperator needs a tensor or an Operator of blocks; got {type(base).__name__}."
            )
        self._set_blocks(base, block_dim)

    @property
    def base_linear_op(self) -> Operator:
        """The blocks ``(*batch, t, n, m)`` (GPyTorch's name)."""
        return self.base

    def _blocks(self) -> torch.Tensor:
        return self.base.to_dense().expand(self.base.shape)

    def _dense(self):
        B = self._blocks()
        eye = torch.eye(self.num_blocks, dtype=B.dtype, device=B.device)
        out = torch.einsum("...apq,ab->...paqb", B, eye)  # A[(p, a), (q, b)] = δ_ab K_a[p, q]
        return out.reshape(self.shape)

    def diagonal(self, offset: int = 0, dim1: int = -2, dim2: int = -1):
        if (offset, dim1 % self.dim(), dim2 % self.dim()) != (0, self.dim() - 2, self.dim() - 1):
            return self.to_dense().diagonal(offset=offset, dim1=dim1, dim2=dim2)
        d = self.base.diagonal().expand(self.base.shape[:-1])  # (*batch, t, n)
        return d.mT.reshape(*d.shape[:-2], -1)

    def _matmul(self, rhs):
        # A v = P diag(K_a) Pᵀ v: rows (j, b) of v regrouped by task, one batched product, regrouped back.
        t, m, k = self.num_blocks, self.base.shape[-1], rhs.shape[-1]
        batch = broadcast_shapes(self.batch_shape, rhs.shape[:-2])
        X = rhs.expand(*batch, *rhs.shape[-2:]).reshape(*batch, m, t, k).transpose(-3, -2)  # (*batch, t, m, k)
        Y = self.base.matmul(X)  # (*batch, t, n, k)
        return Y.transpose(-3, -2).reshape(*Y.shape[:-3], -1, k)

    def _getitem_slices(self, rows, cols):
        t = self.num_blocks
        pr, pc = _point_slice(rows, self.shape[-2], t), _point_slice(cols, self.shape[-1], t)
        if pr is not None and pc is not None:  # whole points: the same blocks, sliced
            return BlockInterleavedOperator(self.base._getitem_slices(pr, pc))
        r = _index_tensor(rows, self.shape[-2], self.device)
        c = _index_tensor(cols, self.shape[-1], self.device)
        return DenseOperator(self._entries(r[:, None], c[None, :]))

    def _getitem_entries(self, rows, cols):
        r = _index_tensor(rows, self.shape[-2], self.device)
        c = _index_tensor(cols, self.shape[-1], self.device)
        # a slice keeps its own axis, as in tensor indexing (rows first)
        if isinstance(rows, slice):
            r = r.reshape(-1, *([1] * c.dim()))
        elif isinstance(cols, slice):
            r = r.unsqueeze(-1)
        return self._entries(r, c)

    def _entries(self, r: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """Entries ``A[r, c]`` for broadcastable index tensors, from the blocks alone: ``(*batch, *broadcast)``."""
        t = self.num_blocks
        pi, a = r // t, r % t
        pj, b = c // t, c % t
        vals = self._blocks()[..., a, pi, pj]
        return vals * (a == b).to(vals.dtype)

    def _diagonal_blocks(self, diag: torch.Tensor) -> torch.Tensor:
        return diag.reshape(*diag.shape[:-1], -1, self.num_blocks).mT  # rows (i, a) → (*batch, t, n)

    def cholesky(self, upper: bool = False) -> Operator:
        """``L`` with ``A = L Lᵀ``, block by block: ``P diag(L_a) Pᵀ`` is lower triangular in interleaved order
        (its entry ``[(i, a), (j, a)]`` is nonzero only for ``i ≥ j``), so it is the Cholesky factor of ``A``."""
        L = BlockInterleavedOperator(DenseOperator(psd_safe_cholesky(self._blocks())))
        return L._transpose() if upper else L
