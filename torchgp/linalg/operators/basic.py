r"""Dense, diagonal and added-diagonal operators (the kernel matrix is :mod:`torchgp.linalg.operators.kernel`).

* :class:`DenseOperator` wraps a tensor ``(*batch, n, m)``;
* :class:`DiagOperator` is ``diag(d)``, ``d (*batch, n)``; :class:`ConstantDiagOperator` is ``c I``;
* :class:`AddedDiagOperator` is ``base + diag(d)`` (a kernel matrix plus observation noise).
"""

from __future__ import annotations

import torch

from torchgp._shapes import broadcast_shapes
from torchgp.errors import ShapeError
from torchgp.linalg.operators.base import Operator
from torchgp.linalg.operators.indexing import index_batch


class DenseOperator(Operator):
    """A tensor ``(*batch, n, m)`` seen as an operator."""

    def __init__(self, tensor: torch.Tensor):
        if tensor.dim() < 2:
            raise ShapeError(f"A covariance must have at least 2 dimensions; got shape {tuple(tensor.shape)}.")
        self.tensor = tensor
        self.shape, self.dtype, self.device = tensor.shape, tensor.dtype, tensor.device

    def _dense(self):
        return self.tensor

    def to_dense(self):
        return self.tensor

    def _matmul(self, rhs):
        return self.tensor @ rhs

    def diagonal(self, offset: int = 0, dim1: int = -2, dim2: int = -1):
        return self.tensor.diagonal(offset=offset, dim1=dim1, dim2=dim2)

    def _tensors(self):
        return [self.tensor]

    def _map(self, fn):
        return DenseOperator(fn(self.tensor))

    def _transpose(self):
        return DenseOperator(self.tensor.mT)

    def _expand(self, batch_shape):
        return DenseOperator(self.tensor.expand(*batch_shape, *self.shape[-2:]))

    def _getitem_batch(self, batch_idx):
        return DenseOperator(index_batch(self.tensor, self.batch_shape, batch_idx, 2))

    def _sum_batch(self, dim):
        return DenseOperator(self.tensor.expand(self.shape).sum(dim))

    def _prod_batch(self, dim):
        return DenseOperator(self.tensor.expand(self.shape).prod(dim))

    def _scale(self, c):
        c = torch.as_tensor(c, dtype=self.dtype, device=self.device)
        return DenseOperator(self.tensor * c[..., None, None])


class DiagOperator(Operator):
    """``diag(d)``, ``d (*batch, n)``: products, solves and log-determinants in O(n).

    Args:
        diag: ``(*batch, n)`` diagonal entries.
    """

    def __init__(self, diag: torch.Tensor):
        if diag.dim() < 1:
            raise ShapeError("DiagOperator needs a (*batch, n) diagonal; got a scalar (use ConstantDiagOperator).")
        self._diag = diag
        self.shape = torch.Size([*diag.shape, diag.shape[-1]])
        self.dtype, self.device = diag.dtype, diag.device

    @property
    def diag_values(self) -> torch.Tensor:
        """The diagonal, ``(*batch, n)``."""
        return self._diag

    def _dense(self):
        return torch.diag_embed(self._diag)

    def diagonal(self, offset: int = 0, dim1: int = -2, dim2: int = -1):
        if (offset, dim1 % self.dim(), dim2 % self.dim()) != (0, self.dim() - 2, self.dim() - 1):
            return self.to_dense().diagonal(offset=offset, dim1=dim1, dim2=dim2)
        return self._diag

    def _matmul(self, rhs):
        return self._diag.unsqueeze(-1) * rhs

    def _matmul_operator(self, other):
        if isinstance(other, DiagOperator):
            return DiagOperator(self._diag * other._diag)
        return super()._matmul_operator(other)

    def _tensors(self):
        return [self._diag]

    def _map(self, fn):
        return DiagOperator(fn(self._diag))

    def _transpose(self):
        return self

    def _expand(self, batch_shape):
        return DiagOperator(self._diag.expand(*batch_shape, self.shape[-1]))

    def _getitem_batch(self, batch_idx):
        return DiagOperator(index_batch(self._diag, self.batch_shape, batch_idx, 1))

    def _getitem_slices(self, rows, cols):
        if rows == cols:
            return DiagOperator(self._diag[..., rows])
        return super()._getitem_slices(rows, cols)

    def _sum_batch(self, dim):
        return DiagOperator(self._diag.expand(self.shape[:-1]).sum(dim))

    def _prod_batch(self, dim):
        return DiagOperator(self._diag.expand(self.shape[:-1]).prod(dim))

    def _scale(self, c):
        c = torch.as_tensor(c, dtype=self.dtype, device=self.device)
        return DiagOperator(self._diag * c[..., None])

    def add_diagonal(self, diag):
        from torchgp.linalg.operators.base import _diag_tensor

        return DiagOperator(self._diag + _diag_tensor(diag, self))

    def _add_operator(self, other):
        if isinstance(other, DiagOperator):
            return DiagOperator(self._diag + other._diag)
        return other.add_diagonal(self._diag)

    def _mul_operator(self, other):
        # diag(d) ∘ B = diag(d ⊙ diag(B)): only the diagonal of B is needed.
        return DiagOperator(self._diag * other.diagonal())

    def inverse(self) -> DiagOperator:
        return DiagOperator(self._diag.reciprocal())

    def sqrt(self) -> DiagOperator:
        return DiagOperator(self._diag.sqrt())


class ConstantDiagOperator(DiagOperator):
    """``c I`` of size ``n``, ``c (*batch)`` or ``(*batch, 1)``: a :class:`DiagOperator` with one value.

    Args:
        diag_values: ``(*batch, 1)`` (GPyTorch's convention) or ``(*batch)``-shaped constant.
        diag_shape: ``n``.
    """

    def __init__(self, diag_values: torch.Tensor, diag_shape: int):
        if diag_values.dim() == 0:
            diag_values = diag_values.reshape(1)
        if diag_values.shape[-1] != 1:
            diag_values = diag_values.unsqueeze(-1)
        self.diag_constant = diag_values
        super().__init__(diag_values.expand(*diag_values.shape[:-1], diag_shape))


def diag_tensor(diag) -> torch.Tensor:
    """The ``(*batch, n)`` (or broadcastable) diagonal of an added-diagonal operator, from a tensor or a
    :class:`DiagOperator` / :class:`ConstantDiagOperator` (GPyTorch passes a diagonal operator there)."""
    if isinstance(diag, (DiagOperator, ConstantDiagOperator)):
        return diag.diagonal()
    if isinstance(diag, Operator):
        raise TypeError(
            f"AddedDiagOperator: the diagonal must be a (*batch, n) tensor or a DiagOperator; got "
            f"{type(diag).__name__}. Use SumOperator (or +) to add a general operator."
        )
    return diag


class AddedDiagOperator(Operator):
    """``base + diag(d)``: a kernel matrix plus (homo- or heteroskedastic) noise.

    Args:
        base: an :class:`Operator`, ``(*batch, n, n)``.
        diag: ``(*batch, n)`` (or broadcastable, e.g. a scalar noise).
    """

    def __new__(cls, base=None, diag=None, *args, **kwargs):
        # ``AddedDiagOperator(K, d)`` keeps the structure of K: a Kronecker or low-rank base gets the
        # subclass its solver knows (a likelihood adding noise need not know what K is).
        if cls is AddedDiagOperator:
            from torchgp.linalg.operators.kronecker import KroneckerProductAddedDiag, KroneckerProductOperator
            from torchgp.linalg.operators.structured import LowRankRootAddedDiag, LowRankRootOperator

            if isinstance(base, KroneckerProductOperator):
                cls = KroneckerProductAddedDiag
            elif isinstance(base, LowRankRootOperator):
                cls = LowRankRootAddedDiag
        return super().__new__(cls)

    def __init__(self, base: Operator, diag: torch.Tensor):
        from torchgp.linalg.operators import as_operator

        self.base = as_operator(base)
        self.diag = diag = diag_tensor(diag)
        batch = broadcast_shapes(self.base.shape[:-1], diag.shape)
        self.shape = torch.Size([*batch, self.base.shape[-1]])
        self.dtype, self.device = self.base.dtype, self.base.device

    def _dense(self):
        d = self.diag.expand(self.shape[:-1])
        return self.base.to_dense() + torch.diag_embed(d)

    def diagonal(self, offset: int = 0, dim1: int = -2, dim2: int = -1):
        if (offset, dim1 % self.dim(), dim2 % self.dim()) != (0, self.dim() - 2, self.dim() - 1):
            return self.to_dense().diagonal(offset=offset, dim1=dim1, dim2=dim2)
        return self.base.diagonal() + self.diag

    def _matmul(self, rhs):
        return self.base.matmul(rhs) + self.diag.unsqueeze(-1) * rhs

    def _rebuild(self, base: Operator, diag: torch.Tensor) -> Operator:
        return base.add_diagonal(diag)

    def _tensors(self):
        return [*self.base._tensors(), self.diag]

    def _map(self, fn):
        return self._rebuild(self.base._map(fn), fn(self.diag))

    def _transpose(self):
        return self._rebuild(self.base._transpose(), self.diag)

    def _full_diag(self):
        return self.diag.expand(self.shape[:-1])

    def _expand(self, batch_shape):
        return self._rebuild(self.base._expand(batch_shape), self.diag.expand(*batch_shape, self.shape[-1]))

    def _getitem_batch(self, batch_idx):
        return self._rebuild(self.base.expand(self.shape)._getitem_batch(batch_idx), self._full_diag()[batch_idx])

    def _getitem_slices(self, rows, cols):
        if rows == cols:
            return self._rebuild(self.base._getitem_slices(rows, cols), self._full_diag()[..., rows])
        return super()._getitem_slices(rows, cols)

    def _sum_batch(self, dim):
        return self._rebuild(self.base.expand(self.shape)._sum_batch(dim), self._full_diag().sum(dim))

    def _scale(self, c):
        c = torch.as_tensor(c, dtype=self.dtype, device=self.device)
        return self._rebuild(self.base._scale(c), self.diag * c[..., None])

    def add_diagonal(self, diag):
        from torchgp.linalg.operators.base import _diag_tensor

        return self._rebuild(self.base, self.diag + _diag_tensor(diag, self))

    def _add_operator(self, other):
        if isinstance(other, DiagOperator):
            return self.add_diagonal(other.diagonal())
        if isinstance(other, AddedDiagOperator):
            return (self.base + other.base).add_diagonal(self.diag + other.diag)
        return (self.base + other).add_diagonal(self.diag)

    def evaluate_kernel(self):
        return self._rebuild(self.base.evaluate_kernel(), self.diag)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base!r} + diag, shape={tuple(self.shape)})"
