r"""The interpolated operator ``W_1 K_UU W_2ᵀ`` of structured kernel interpolation (KISS-GP).

Wilson & Nickisch (2015, eq. 5) approximate ``K_XX' ≈ W_X K_UU W_X'ᵀ`` with ``K_UU`` the kernel on a regular
grid of ``m`` points and ``W`` sparse cubic-interpolation weights (``c^d`` non-zeros per row, ``c = 4``). A
product costs ``O(n c^d)`` for each ``W`` plus one ``K_UU`` product (``O(m log m)`` when ``K_UU`` is Toeplitz
or a Kronecker product of Toeplitz factors, see :mod:`torchgp.linalg.toeplitz`).
"""

from __future__ import annotations

import torch

from torchgp._shapes import broadcast_shapes
from torchgp.errors import ShapeError
from torchgp.linalg.operators import KroneckerProductOperator, Operator, as_operator
from torchgp.linalg.toeplitz import ToeplitzOperator, index_batch
from torchgp.utils.interpolation import left_interp

__all__ = ["InterpolatedOperator", "grid_entries", "interp_matmul", "interp_t_matmul"]


def grid_entries(base: Operator, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Entries ``base[rows, cols]`` pairwise for long index tensors of one shape ``s`` → ``(*batch, *s)``.

    A Toeplitz base or a Kronecker product of Toeplitz factors is read from its columns (a flat grid index
    ``g = Σ_i j_i Π_{l>i} m_l``, the last factor fastest, gives the entry ``Π_i c_i[|j_i - j'_i|]``); any other
    base is made dense.
    """
    if isinstance(base, ToeplitzOperator):
        return base.entries(rows, cols)
    if isinstance(base, KroneckerProductOperator) and all(isinstance(f, ToeplitzOperator) for f in base.factors):
        out, r, c = None, rows, cols
        for f in reversed(base.factors):
            m = f.shape[-1]
            e = f.entries(r % m, c % m)
            out = e if out is None else out * e
            r, c = r // m, c // m
        return out.expand(*base.batch_shape, *broadcast_shapes(rows.shape, cols.shape))
    K = base.to_dense()
    return K[..., rows, cols]


# Rows of ``W`` per block of the unbatched products below: the temporaries are ``O(block · t)`` whatever ``n``.
_ROW_BLOCK = 1 << 16


# Rows per block of the in-place (no graph) product ``W R``: its gathered temporaries are ``block · t`` numbers.
_ROW_BLOCK_IN_PLACE = 1 << 13


def _needs_graph(*ts: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in ts)


def _per_member(fn, idx: torch.Tensor, val: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
    """``fn`` of batched weights ``(*batch, n, k)`` and ``R (*batch', ., t)``, one batch member at a time (so no
    ``(n, k, t)`` gather per member is held), stacked to ``(*broadcast batch, ., t)``."""
    batch = broadcast_shapes(idx.shape[:-2], R.shape[:-2])
    i = idx.expand(*batch, *idx.shape[-2:]).reshape(-1, *idx.shape[-2:])
    v = val.expand(*batch, *val.shape[-2:]).reshape(-1, *val.shape[-2:])
    r = R.expand(*batch, *R.shape[-2:]).reshape(-1, *R.shape[-2:])
    out = torch.stack([fn(i[b], v[b], r[b]) for b in range(i.shape[0])])
    return out.reshape(*batch, *out.shape[-2:])


def _w_matmul(idx: torch.Tensor, val: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
    """``W R`` for ``W`` given by ``(idx, val) (n, k)`` and ``R (*batch, m, t)`` → ``(*batch, n, t)``.

    ``(W R)_i = Σ_j val_ij R[idx_ij]``: one stencil column at a time, accumulated in place into the output
    (no graph needed) or out of place in blocks of ``_ROW_BLOCK`` rows (with a graph), so the only ``O(n t)``
    tensor is the result. Batched weights ``(*batch, n, k)`` are applied one batch member at a time.
    """
    if idx.dim() > 2:
        return _per_member(_w_matmul, idx, val, R)
    val = val.to(R.dtype)
    if not _needs_graph(R, val):
        out = R.new_empty(*R.shape[:-2], idx.shape[0], R.shape[-1])
        for s in range(0, idx.shape[0], _ROW_BLOCK_IN_PLACE):  # gathered temporaries of one block of rows
            rows = slice(s, s + _ROW_BLOCK_IN_PLACE)
            ib, vb, ob = idx[rows], val[rows], out[..., rows, :]
            ob.copy_(R.index_select(-2, ib[:, 0]).mul_(vb[:, 0, None]))
            for j in range(1, idx.shape[-1]):
                ob.addcmul_(R.index_select(-2, ib[:, j]), vb[:, j, None])
        return out
    blocks = []
    for s in range(0, idx.shape[0], _ROW_BLOCK):
        ib, vb = idx[s : s + _ROW_BLOCK], val[s : s + _ROW_BLOCK]
        out = None
        for j in range(idx.shape[-1]):
            term = R.index_select(-2, ib[:, j]) * vb[:, j, None]
            out = term if out is None else out + term
        blocks.append(out)
    return blocks[0] if len(blocks) == 1 else torch.cat(blocks, -2)


def _wt_matmul(idx: torch.Tensor, val: torch.Tensor, R: torch.Tensor, m: int) -> torch.Tensor:
    """``Wᵀ R`` for ``(idx, val) (n, k)`` and ``R (*batch, n, t)`` → ``(*batch, m, t)``: ``(Wᵀ R)_g = Σ_{idx_ij = g}
    val_ij R_i``, scattered one stencil column and one block of ``_ROW_BLOCK`` rows at a time."""
    if idx.dim() > 2:
        return _per_member(lambda i, v, r: _wt_matmul(i, v, r, m), idx, val, R)
    val = val.to(R.dtype)
    graph = _needs_graph(R, val)
    out = R.new_zeros(*R.shape[:-2], m, R.shape[-1])
    for s in range(0, idx.shape[0], _ROW_BLOCK):
        ib, vb, Rb = idx[s : s + _ROW_BLOCK], val[s : s + _ROW_BLOCK], R[..., s : s + _ROW_BLOCK, :]
        for j in range(idx.shape[-1]):
            if graph:
                out = out.index_add(-2, ib[:, j], Rb * vb[:, j, None])
            else:
                out.index_add_(-2, ib[:, j], Rb * vb[:, j, None])
    return out


def interp_matmul(indices: torch.Tensor, values: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
    """``W R`` for interpolation weights ``indices, values (*batch, n, k)`` and grid values ``R (*batch, m, t)``
    → ``(*batch, n, t)`` in ``O(n k t)`` (no ``(n, k, t)`` temporary for unbatched weights)."""
    return _w_matmul(indices, values, R)


def interp_t_matmul(indices: torch.Tensor, values: torch.Tensor, R: torch.Tensor, m: int) -> torch.Tensor:
    """``Wᵀ R`` for weights ``(*batch, n, k)`` into ``m`` grid points and ``R (*batch, n, t)`` → ``(*batch, m, t)``."""
    return _wt_matmul(indices, values, R, m)


class InterpolatedOperator(Operator):
    r"""``W_1 B W_2ᵀ`` with ``W`` given by (index, value) pairs (:func:`torchgp.utils.interpolation.left_interp`).

    Args:
        base: the grid operator ``B`` ``(*batch, m, m)`` (Toeplitz, Kronecker of Toeplitz, dense, ...).
        left_indices, left_values: ``(*batch, n1, k)`` long indices into the ``m`` grid points and their weights.
        right_indices, right_values: ``(*batch, n2, k)``; default: the left ones (a symmetric ``W B Wᵀ``).

    Shapes:
        ``(*batch, n1, n2)``; ``matmul``: ``(*batch, n2, t) → (*batch, n1, t)`` in ``O(n k + cost(B))``.
    """

    def __init__(self, base, left_indices, left_values, right_indices=None, right_values=None):
        base = as_operator(base)
        if right_indices is None:
            right_indices, right_values = left_indices, left_values
        for name, idx, val in (("left", left_indices, left_values), ("right", right_indices, right_values)):
            if idx.shape != val.shape or idx.dim() < 2:
                raise ShapeError(
                    f"InterpolatedOperator: {name} indices {tuple(idx.shape)} and values {tuple(val.shape)} must "
                    "both have shape (*batch, n, k)."
                )
        self.base = base
        self.left_indices, self.left_values = left_indices, left_values
        self.right_indices, self.right_values = right_indices, right_values
        batch = broadcast_shapes(base.batch_shape, left_indices.shape[:-2], right_indices.shape[:-2])
        self.shape = torch.Size([*batch, left_indices.shape[-2], right_indices.shape[-2]])
        self.dtype, self.device = base.dtype, base.device

    @property
    def symmetric(self) -> bool:
        return self.left_indices is self.right_indices and self.left_values is self.right_values

    def _rebuild(self, base, li, lv, ri, rv) -> InterpolatedOperator:
        if self.symmetric:
            return InterpolatedOperator(base, li, lv)
        return InterpolatedOperator(base, li, lv, ri, rv)

    def _dense(self):
        n1, n2, m = self.shape[-2], self.shape[-1], self.base.shape[-1]
        if m * m > n1 * n2:  # a large grid: products with the identity of the smaller side, never B itself
            if n2 <= n1:
                eye = torch.eye(n2, dtype=self.dtype, device=self.device)
                return self._matmul(eye).expand(self.shape)
            eye = torch.eye(n1, dtype=self.dtype, device=self.device)
            return self._transpose()._matmul(eye).mT.expand(self.shape)
        B = self.base.to_dense()
        BW2t = left_interp(self.right_indices, self.right_values, B).mT  # (*batch, m, n2) = B W_2ᵀ
        out = left_interp(self.left_indices, self.left_values, BW2t)  # W_1 B W_2ᵀ
        return out.expand(self.shape)

    def _matmul(self, rhs):
        m = self.base.shape[-1]
        v = _wt_matmul(self.right_indices, self.right_values, rhs, m)  # W_2ᵀ v, O(n k)
        v = self.base.matmul(v)  # B (W_2ᵀ v)
        out = _w_matmul(self.left_indices, self.left_values, v)  # W_1 B W_2ᵀ v
        return out.expand(*broadcast_shapes(self.batch_shape, rhs.shape[:-2]), *out.shape[-2:])

    def left_interp_matmul(self, R: torch.Tensor) -> torch.Tensor:
        """``W_1 R`` for grid values ``R (*batch, m, t)`` → ``(*batch, n1, t)``, ``O(n1 k t)``."""
        return _w_matmul(self.left_indices, self.left_values, R)

    def left_interp_t_matmul(self, R: torch.Tensor) -> torch.Tensor:
        """``W_1ᵀ R`` for ``R (*batch, n1, t)`` → grid values ``(*batch, m, t)``, ``O(n1 k t)``."""
        return _wt_matmul(self.left_indices, self.left_values, R, self.base.shape[-1])

    def right_interp_t_matmul(self, R: torch.Tensor) -> torch.Tensor:
        """``W_2ᵀ R`` for ``R (*batch, n2, t)`` → grid values ``(*batch, m, t)``, ``O(n2 k t)``."""
        return _wt_matmul(self.right_indices, self.right_values, R, self.base.shape[-1])

    def diagonal(self, offset: int = 0, dim1: int = -2, dim2: int = -1):
        r"""``(W_1 B W_2ᵀ)_{ii} = Σ_{a,b} w^{(1)}_{ia} B[j_{ia}, j'_{ib}] w^{(2)}_{ib}``, ``(*batch, n)``, ``O(n k²)``."""
        if (offset, dim1 % self.dim(), dim2 % self.dim()) != (0, self.dim() - 2, self.dim() - 1):
            return super().diagonal(offset, dim1, dim2)
        if self.shape[-1] != self.shape[-2]:
            raise ShapeError(f"diagonal() needs a square operator; got shape {tuple(self.shape)}.")
        li, ri = self.left_indices, self.right_indices
        if li.dim() > 2 or ri.dim() > 2:  # batched interpolation weights: from the dense matrix
            return super().diagonal()
        B = grid_entries(self.base, li.unsqueeze(-1), ri.unsqueeze(-2))  # (*batch, n, k, k)
        return torch.einsum("...ia,...iab,...ib->...i", self.left_values, B, self.right_values).expand(self.shape[:-1])

    def _tensors(self):
        vals = [self.left_values] if self.symmetric else [self.left_values, self.right_values]
        return [*self.base._tensors(), *vals]

    def _map(self, fn):
        li, lv = fn(self.left_indices), fn(self.left_values)
        if self.symmetric:
            return InterpolatedOperator(self.base._map(fn), li, lv)
        return InterpolatedOperator(self.base._map(fn), li, lv, fn(self.right_indices), fn(self.right_values))

    def _transpose(self):
        if self.symmetric:
            return InterpolatedOperator(self.base.mT, self.left_indices, self.left_values)
        return InterpolatedOperator(
            self.base.mT, self.right_indices, self.right_values, self.left_indices, self.left_values
        )

    def _expand(self, batch_shape):
        return self._rebuild(
            self.base.expand(*batch_shape, *self.base.shape[-2:]),
            self.left_indices,
            self.left_values,
            self.right_indices,
            self.right_values,
        )

    def _getitem_batch(self, batch_idx):
        b = self.batch_shape
        base = self.base.expand(*b, *self.base.shape[-2:])._getitem_batch(batch_idx)
        if self.symmetric:  # one weight pair: the member stays symmetric (the grid caches need it)
            pair = (self.left_indices, self.left_values)
            return InterpolatedOperator(base, *(index_batch(t, b, batch_idx, 2) for t in pair))
        parts = [
            index_batch(t, b, batch_idx, 2)
            for t in (self.left_indices, self.left_values, self.right_indices, self.right_values)
        ]
        return InterpolatedOperator(base, *parts)

    def _getitem_slices(self, rows, cols):
        return InterpolatedOperator(
            self.base,
            self.left_indices[..., rows, :],
            self.left_values[..., rows, :],
            self.right_indices[..., cols, :],
            self.right_values[..., cols, :],
        )

    def _scale(self, c):
        return self._rebuild(
            self.base._scale(c), self.left_indices, self.left_values, self.right_indices, self.right_values
        )

    def __repr__(self) -> str:
        return f"InterpolatedOperator(base={self.base!r}, shape={tuple(self.shape)}, dtype={self.dtype})"
