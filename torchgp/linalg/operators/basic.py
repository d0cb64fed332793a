r"""Dense, kernel, diagonal and added-diagonal operators.

* :class:`DenseOperator` wraps a tensor ``(*batch, n, m)``;
* :class:`KernelOperator` knows ``(kernel, x1, x2)`` and evaluates entries only when asked: ``to_dense()``
  refuses up front (``KernelMemoryError``) a matrix over ``settings.max_dense_memory``, ``matmul`` runs
  block by block, and indexing evaluates only the rows and columns asked for;
* :class:`DiagOperator` is ``diag(d)``, ``d (*batch, n)``; :class:`ConstantDiagOperator` is ``c I``;
* :class:`AddedDiagOperator` is ``base + diag(d)`` (a kernel matrix plus observation noise).
"""

from __future__ import annotations

import torch

from torchgp import settings
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


def _uniform_batch(kernel) -> bool:
    """Whether no kernel (or sub-kernel) has batch-shaped hyperparameters."""
    return all(len(getattr(m, "batch_shape", ())) == 0 for m in kernel.modules())


class KernelOperator(Operator):
    """The kernel matrix ``k(x1, x2)``, ``(*batch, n, m)``, evaluated only when asked.

    Args:
        kernel: a :class:`~torchgp.kernels.Kernel`; its ``evaluate_block(x1, x2, diag=False)``
            gives dense blocks (active dims and batch handling included).
        x1: ``(*batch, n, d)`` inputs; x2: ``(*batch, m, d)`` inputs.
        params: extra keyword arguments passed to the kernel's forward.
    """

    def __init__(self, kernel, x1: torch.Tensor, x2: torch.Tensor, **params):
        self.kernel, self.x1, self.x2, self.params = kernel, x1, x2, params
        self.dtype, self.device = x1.dtype, x1.device
        self.shape = kernel.output_shape(x1, x2, **params)
        self.symmetric = x1 is x2

    def _dense(self):
        return self.kernel.evaluate_block(self.x1, self.x2, **self.params)

    def evaluate_kernel(self) -> Operator:
        """The evaluated kernel matrix as a :class:`DenseOperator` (guarded by ``settings.max_dense_memory``)."""
        return DenseOperator(self.to_dense())

    def diagonal(self, offset: int = 0, dim1: int = -2, dim2: int = -1):
        if (offset, dim1 % self.dim(), dim2 % self.dim()) != (0, self.dim() - 2, self.dim() - 1):
            return self.to_dense().diagonal(offset=offset, dim1=dim1, dim2=dim2)
        if self.shape[-1] != self.shape[-2]:
            raise ShapeError(f"diagonal() needs a square kernel matrix; got shape {tuple(self.shape)}.")
        return self.kernel.evaluate_block(self.x1, self.x2, diag=True, **self.params).expand(self.shape[:-1])

    def block(self, start: int, stop: int) -> torch.Tensor:
        """Rows ``start:stop`` of the matrix, ``(*batch, stop - start, m)``, differentiable."""
        x1 = self.x1[..., start:stop, :]
        return self.kernel.evaluate_block(x1, self.x2, **self.params)

    def _matmul(self, rhs):
        n = self.shape[-2]
        block = settings.kernel_block_size.value()
        if n <= block or self.dense_nbytes() <= min(settings.max_dense_memory.value(), 2**27):
            return self._dense() @ rhs
        from torchgp.linalg.blockwise import blockwise_matmul

        return blockwise_matmul(self, rhs)

    def _tensors(self):
        return [self.x1, self.x2, *self.kernel.parameters()]

    def _transpose(self):
        # k(x, x') = k(x', x) for a covariance function.
        if self.symmetric:
            return self
        return KernelOperator(self.kernel, self.x2, self.x1, **self.params)

    def _simple(self) -> bool:
        return _uniform_batch(self.kernel) and not self.params.get("last_dim_is_batch", False)

    def _with_inputs(self, x1, x2) -> KernelOperator:
        return KernelOperator(self.kernel, x1, x1 if (self.symmetric and x2 is None) else x2, **self.params)

    def _expand(self, batch_shape):
        if not self._simple():
            return super()._expand(batch_shape)
        x1 = self.x1.expand(*batch_shape, *self.x1.shape[-2:])
        return self._with_inputs(x1, None if self.symmetric else self.x2.expand(*batch_shape, *self.x2.shape[-2:]))

    def _getitem_batch(self, batch_idx):
        if not self._simple():
            return super()._getitem_batch(batch_idx)
        x1 = index_batch(self.x1, self.batch_shape, batch_idx, 2)
        x2 = None if self.symmetric else index_batch(self.x2, self.batch_shape, batch_idx, 2)
        return self._with_inputs(x1, x2)

    def _getitem_slices(self, rows, cols):
        return KernelOperator(self.kernel, self.x1[..., rows, :], self.x2[..., cols, :], **self.params)

    def _getitem_entries(self, rows, cols):
        # Only the rows and columns asked for are evaluated.
        def pick(x, i):
            if isinstance(i, int):
                return x[..., [i], :]
            if isinstance(i, torch.Tensor) and i.dim() > 1:
                return None
            return x[..., i, :]

        x1, x2 = pick(self.x1, rows), pick(self.x2, cols)
        if x1 is None or x2 is None:
            return super()._getitem_entries(rows, cols)
        pairwise = isinstance(rows, torch.Tensor) and isinstance(cols, torch.Tensor)
        if pairwise:
            if rows.numel() != cols.numel():
                raise IndexError(f"Row and column index tensors differ in length: {rows.numel()} and {cols.numel()}.")
            out = self.kernel.evaluate_block(x1, x2, diag=True, **self.params)
            return out.expand(*self.batch_shape, out.shape[-1])
        out = self.kernel.evaluate_block(x1, x2, **self.params)
        out = out.expand(*self.batch_shape, *out.shape[-2:])
        if isinstance(rows, int):
            out = out[..., 0, :]
            return out[..., 0] if isinstance(cols, int) else out
        return out[..., :, 0] if isinstance(cols, int) else out

    def __repr__(self) -> str:
        return f"KernelOperator({type(self.kernel).__name__}, shape={tuple(self.shape)}, dtype={self.dtype})"


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
        self.diag = diag
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
