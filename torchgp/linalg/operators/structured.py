r"""Low-rank, sum, element-wise product and scaled operators.

* :class:`LowRankRootOperator` is ``R Rᵀ``, ``R (*batch, n, r)`` (GPyTorch's ``RootLinearOperator``:
  ``.root`` is ``R`` as an operator); ``+ diag(d)`` gives :class:`LowRankRootAddedDiag`, solved by
  Woodbury's identity;
* :class:`SumOperator` is ``Σ_i A_i`` (products term by term);
* :class:`ProductOperator` is the element-wise (Hadamard) product ``A ∘ B``; a low-rank factor makes its
  product cheap, ``(R Rᵀ ∘ B) v = Σ_j r_j ⊙ (B (r_j ⊙ v))``;
* :class:`ConstantMulOperator` is ``c · A`` with ``c`` a scalar or ``(*batch)``.
"""

from __future__ import annotations

import functools

import torch

from torchgp._shapes import broadcast_shapes
from torchgp.errors import ShapeError
from torchgp.linalg.operators.base import Operator
from torchgp.linalg.operators.basic import AddedDiagOperator, DenseOperator, DiagOperator
from torchgp.linalg.operators.indexing import index_batch


class LowRankRootOperator(Operator):
    """``R Rᵀ`` with ``R (*batch, n, r)``: products in ``O(n r)``, never the ``n × n`` matrix.

    Args:
        root: ``R``, ``(*batch, n, r)``.
    """

    def __init__(self, root: torch.Tensor):
        if isinstance(root, Operator):
            root = root.to_dense()
        if root.dim() < 2:
            raise ShapeError(f"LowRankRootOperator needs a root of shape (*batch, n, r); got {tuple(root.shape)}.")
        self.R = root
        self.shape = torch.Size([*root.shape[:-1], root.shape[-2]])
        self.dtype, self.device = root.dtype, root.device

    @property
    def root(self) -> DenseOperator:
        """``R`` as an operator ``(*batch, n, r)`` (``.root.to_dense()`` is the tensor)."""
        return DenseOperator(self.R)

    def root_decomposition(self, method=None):
        return self

    def _dense(self):
        return self.R @ self.R.mT

    def diagonal(self, offset: int = 0, dim1: int = -2, dim2: int = -1):
        if (offset, dim1 % self.dim(), dim2 % self.dim()) != (0, self.dim() - 2, self.dim() - 1):
            return self.to_dense().diagonal(offset=offset, dim1=dim1, dim2=dim2)
        return self.R.square().sum(-1)

    def _matmul(self, rhs):
        return self.R @ (self.R.mT @ rhs)

    def _tensors(self):
        return [self.R]

    def _map(self, fn):
        return LowRankRootOperator(fn(self.R))

    def _transpose(self):
        return self

    def _expand(self, batch_shape):
        return LowRankRootOperator(self.R.expand(*batch_shape, *self.R.shape[-2:]))

    def _getitem_batch(self, batch_idx):
        return LowRankRootOperator(index_batch(self.R, self.batch_shape, batch_idx, 2))

    def _getitem_slices(self, rows, cols):
        if rows == cols:
            return LowRankRootOperator(self.R[..., rows, :])
        return super()._getitem_slices(rows, cols)

    def _getitem_entries(self, rows, cols):
        if isinstance(rows, torch.Tensor) and isinstance(cols, torch.Tensor):
            return (self.R[..., rows, :] * self.R[..., cols, :]).sum(-1)
        a = self.R[..., rows, :] if not isinstance(rows, int) else self.R[..., [rows], :]
        b = self.R[..., cols, :] if not isinstance(cols, int) else self.R[..., [cols], :]
        out = a @ b.mT
        if isinstance(rows, int):
            out = out[..., 0, :]
            return out[..., 0] if isinstance(cols, int) else out
        return out[..., :, 0] if isinstance(cols, int) else out

    def _sum_batch(self, dim):
        # Σ_b R_b R_bᵀ = [R_1 … R_B][R_1 … R_B]ᵀ: the roots side by side.
        R = self.R.expand(*self.batch_shape, *self.R.shape[-2:]).movedim(dim, -2)
        return LowRankRootOperator(R.reshape(*R.shape[:-3], R.shape[-3], -1))

    def _scale(self, c):
        if isinstance(c, (int, float)) and c >= 0:
            return LowRankRootOperator(self.R * c**0.5)
        return super()._scale(c)

    def add_diagonal(self, diag):
        from torchgp.linalg.operators.base import _diag_tensor

        return LowRankRootAddedDiag(self, _diag_tensor(diag, self))

    def _add_operator(self, other):
        if isinstance(other, LowRankRootOperator):
            b = broadcast_shapes(self.batch_shape, other.batch_shape)
            R1 = self.R.expand(*b, *self.R.shape[-2:])
            R2 = other.R.expand(*b, *other.R.shape[-2:])
            return LowRankRootOperator(torch.cat([R1, R2], -1))
        if isinstance(other, DiagOperator):
            return self.add_diagonal(other.diagonal())
        return super()._add_operator(other)

    def _mul_operator(self, other):
        if isinstance(other, LowRankRootOperator):
            # R1R1ᵀ ∘ R2R2ᵀ = K Kᵀ with K the row-wise Kronecker (Khatri–Rao) product, rank r1·r2.
            r1, r2 = self.R.shape[-1], other.R.shape[-1]
            if r1 * r2 <= self.shape[-1]:
                K = (self.R.unsqueeze(-1) * other.R.unsqueeze(-2)).reshape(
                    *broadcast_shapes(self.R.shape[:-1], other.R.shape[:-1]), r1 * r2
                )
                return LowRankRootOperator(K)
        if isinstance(other, DiagOperator):
            return other._mul_operator(self)
        return super()._mul_operator(other)


class LowRankRootAddedDiag(AddedDiagOperator):
    """``R Rᵀ + diag(d)``, ``R (*batch, n, r)``, ``d (*batch, n)``: solved by Woodbury's identity.

    Args:
        base: a :class:`LowRankRootOperator` (or its root ``R``).
        diag: ``(*batch, n)`` or broadcastable.
    """

    def __init__(self, base, diag: torch.Tensor):
        if not isinstance(base, LowRankRootOperator):
            base = LowRankRootOperator(base)
        super().__init__(base, diag)

    @property
    def root(self) -> DenseOperator:
        return self.base.root


class _ElementwiseOperator(Operator):
    """``A_1 ⋆ A_2 ⋆ …`` for an element-wise ``⋆`` (``_combine``: ``torch.add`` or ``torch.mul``) of operators with
    broadcastable shapes ``(*batch, n, m)``; nested operators of the same kind are flattened into one."""

    _combine = staticmethod(torch.add)
    _verb = "combine"

    def __init__(self, *operators):
        from torchgp.linalg.operators import as_operator

        flat = []
        for op in operators:
            op = as_operator(op)
            flat.extend(op.operators if isinstance(op, type(self)) else [op])
        if not flat:
            raise ValueError(f"{type(self).__name__} needs at least one operator.")
        self.operators = tuple(flat)
        try:
            self.shape = torch.Size(broadcast_shapes(*(op.shape for op in flat)))
        except RuntimeError as e:
            raise ShapeError(f"Cannot {self._verb} operators of shapes {[tuple(op.shape) for op in flat]}.") from e
        self.dtype, self.device = flat[0].dtype, flat[0].device

    def _dense(self):
        return functools.reduce(self._combine, (op.to_dense() for op in self.operators))

    def diagonal(self, offset: int = 0, dim1: int = -2, dim2: int = -1):
        if (offset, dim1 % self.dim(), dim2 % self.dim()) != (0, self.dim() - 2, self.dim() - 1):
            return self.to_dense().diagonal(offset=offset, dim1=dim1, dim2=dim2)
        return functools.reduce(self._combine, (op.diagonal() for op in self.operators)).expand(self.shape[:-1])

    def _tensors(self):
        return [t for op in self.operators for t in op._tensors()]

    def _each(self, fn):
        """The same combination of ``fn(A_i)``: every shape-only operation passes through to the operands."""
        return type(self)(*(fn(op) for op in self.operators))

    def _map(self, fn):
        return self._each(lambda op: op._map(fn))

    def _transpose(self):
        return self._each(lambda op: op._transpose())

    def _expand(self, batch_shape):
        return self._each(lambda op: op._expand(batch_shape))

    def _getitem_batch(self, batch_idx):
        return self._each(lambda op: op.expand(self.shape)._getitem_batch(batch_idx))

    def _getitem_slices(self, rows, cols):
        return self._each(lambda op: op._getitem_slices(rows, cols))

    def _getitem_entries(self, rows, cols):
        return functools.reduce(self._combine, (op._getitem_entries(rows, cols) for op in self.operators))

    def evaluate_kernel(self):
        return self._each(lambda op: op.evaluate_kernel())


class SumOperator(_ElementwiseOperator):
    """``Σ_i A_i`` of operators with broadcastable shapes ``(*batch, n, m)``."""

    _combine = staticmethod(torch.add)
    _verb = "add"

    def _matmul(self, rhs):
        return functools.reduce(torch.add, (op.matmul(rhs) for op in self.operators))

    def _sum_batch(self, dim):
        return self._each(lambda op: op.expand(self.shape)._sum_batch(dim))

    def _scale(self, c):
        return self._each(lambda op: op._scale(c))

    def _add_operator(self, other):
        if isinstance(other, DiagOperator):
            return self.add_diagonal(other.diagonal())
        return SumOperator(self, other)


class ProductOperator(_ElementwiseOperator):
    """Element-wise (Hadamard) product ``A_1 ∘ A_2 ∘ …`` of operators with broadcastable shapes ``(*batch, n, m)``.

    ``matmul`` is exact without the dense product when a factor is low rank:
    ``(R Rᵀ ∘ B) v = Σ_j r_j ⊙ (B (r_j ⊙ v))`` (``r_j`` the columns of ``R``); otherwise it forms the product.
    """

    _combine = staticmethod(torch.mul)
    _verb = "multiply"

    def _matmul(self, rhs):
        low = next((op for op in self.operators if isinstance(op, LowRankRootOperator)), None)
        if low is None or len(self.operators) == 1:
            return self.to_dense() @ rhs
        rest = [op for op in self.operators if op is not low]
        B = rest[0] if len(rest) == 1 else ProductOperator(*rest)
        R = low.R  # (*b, n, r)
        # Σ_j r_j ⊙ (B (r_j ⊙ V)): the r scaled copies of V side by side, one product with B.
        n, r, k = R.shape[-2], R.shape[-1], rhs.shape[-1]
        V = R.unsqueeze(-1) * rhs.unsqueeze(-2)  # (*b, n, r, k)
        BV = B.matmul(V.reshape(*V.shape[:-2], r * k))
        BV = BV.reshape(*BV.shape[:-2], n, r, k)
        return (R.unsqueeze(-1) * BV).sum(-2)

    def _prod_batch(self, dim):
        return self._each(lambda op: op.expand(self.shape)._prod_batch(dim))

    def _scale(self, c):
        return ProductOperator(self.operators[0]._scale(c), *self.operators[1:])

    def _mul_operator(self, other):
        if isinstance(other, DiagOperator):
            return other._mul_operator(self)
        return ProductOperator(self, other)


class ConstantMulOperator(Operator):
    """``c · A`` with ``c`` a scalar or ``(*batch)`` tensor and ``A`` an operator ``(*batch, n, m)``."""

    def __init__(self, base: Operator, constant):
        self.base = base
        self.constant = torch.as_tensor(constant, dtype=base.dtype, device=base.device)
        self.shape = torch.Size([*broadcast_shapes(base.batch_shape, self.constant.shape), *base.shape[-2:]])
        self.dtype, self.device = base.dtype, base.device

    def _c(self, extra: int):
        return self.constant.reshape((*self.constant.shape, *([1] * extra)))

    def _dense(self):
        return self.base.to_dense() * self._c(2)

    def diagonal(self, offset: int = 0, dim1: int = -2, dim2: int = -1):
        if (offset, dim1 % self.dim(), dim2 % self.dim()) != (0, self.dim() - 2, self.dim() - 1):
            return self.to_dense().diagonal(offset=offset, dim1=dim1, dim2=dim2)
        return self.base.diagonal() * self._c(1)

    def _matmul(self, rhs):
        return self.base.matmul(rhs) * self._c(2)

    def _tensors(self):
        return [*self.base._tensors(), self.constant]

    def _map(self, fn):
        return ConstantMulOperator(self.base._map(fn), fn(self.constant))

    def _transpose(self):
        return ConstantMulOperator(self.base._transpose(), self.constant)

    def _full_c(self):
        return self.constant.expand(self.batch_shape)

    def _expand(self, batch_shape):
        return ConstantMulOperator(self.base.expand(*batch_shape, *self.shape[-2:]), self.constant.expand(batch_shape))

    def _getitem_batch(self, batch_idx):
        return ConstantMulOperator(self.base.expand(self.shape)._getitem_batch(batch_idx), self._full_c()[batch_idx])

    def _getitem_slices(self, rows, cols):
        return ConstantMulOperator(self.base._getitem_slices(rows, cols), self.constant)

    def _getitem_entries(self, rows, cols):
        out = self.base._getitem_entries(rows, cols)
        return out * self.constant.reshape((*self.constant.shape, *([1] * (out.dim() - self.constant.dim()))))

    def _scale(self, c):
        return ConstantMulOperator(self.base, self.constant * torch.as_tensor(c, dtype=self.dtype, device=self.device))

    def evaluate_kernel(self):
        return ConstantMulOperator(self.base.evaluate_kernel(), self.constant)
