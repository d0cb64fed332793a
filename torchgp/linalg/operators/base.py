r"""The :class:`Operator` interface: a matrix (batch) ``(*batch, n, m)`` known by its products.

Every operator answers ``shape``, ``dtype``, ``device``, ``matmul``/``@``, ``diagonal()``, ``to_dense()``
(refused over ``settings.max_dense_memory``), indexing, transposes, batch ``expand``/``sum``/``prod``,
``detach``/``to``, ``+``, ``*`` (scalar or Hadamard), ``.mul`` and ``.add_diagonal`` with the structure
kept where it pays, and GPyTorch's linear-algebra methods (``solve``, ``inv_quad_logdet``,
``root_decomposition``, ...: :mod:`~torchgp.linalg.operators.linalg_methods`), which go through the one solver
choice of :mod:`torchgp.linalg.solvers`. Index helpers live in :mod:`~torchgp.linalg.operators.indexing`.
Subclasses implement ``_dense`` and ``shape`` and override what their structure makes cheap.
"""

from __future__ import annotations

import math

import torch

from torchgp import settings
from torchgp._shapes import broadcast_shapes
from torchgp.errors import KernelMemoryError, ShapeError
from torchgp.linalg.operators.indexing import _full, split_index
from torchgp.linalg.operators.linalg_methods import LinearAlgebraMethods


def _fmt_bytes(nbytes: float) -> str:
    """``20480`` → ``'20.0 KiB'``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if nbytes < 1024 or unit == "GiB":
            return f"{nbytes:.1f} {unit}" if unit != "B" else f"{int(nbytes)} B"
        nbytes /= 1024
    return f"{nbytes:.1f} GiB"  # pragma: no cover


def _is_scalar(x) -> bool:
    return isinstance(x, (int, float)) or (isinstance(x, torch.Tensor) and x.numel() == 1 and x.dim() <= 2)


class Operator(LinearAlgebraMethods):
    """A matrix (batch) ``(*batch, n, m)`` known by its products; subclasses implement ``_dense`` and ``shape``."""

    shape: torch.Size
    dtype: torch.dtype
    device: torch.device

    # ------------------------------------------------------------------ what subclasses provide
    def _dense(self) -> torch.Tensor:
        raise NotImplementedError

    def _tensors(self) -> list[torch.Tensor]:
        """The tensors the operator is built from (for ``requires_grad``)."""
        return []

    def _map(self, fn) -> Operator:
        """The same operator with ``fn`` applied to each tensor behind it (``detach``, ``to``)."""
        from torchgp.linalg.operators.basic import DenseOperator

        return DenseOperator(fn(self.to_dense()))

    def _transpose(self) -> Operator:
        from torchgp.linalg.operators.basic import DenseOperator

        return DenseOperator(self.to_dense().mT)

    def _expand(self, batch_shape: torch.Size) -> Operator:
        from torchgp.linalg.operators.basic import DenseOperator

        return DenseOperator(self.to_dense().expand(*batch_shape, *self.shape[-2:]))

    def _getitem_batch(self, batch_idx: tuple) -> Operator:
        from torchgp.linalg.operators.basic import DenseOperator

        return DenseOperator(self.to_dense().expand(self.shape)[(*batch_idx, slice(None), slice(None))])

    def _getitem_slices(self, rows: slice, cols: slice) -> Operator:
        from torchgp.linalg.operators.basic import DenseOperator

        return DenseOperator(self.to_dense()[..., rows, cols])

    def _getitem_entries(self, rows, cols) -> torch.Tensor:
        return self.to_dense()[..., rows, cols]

    def _scale(self, c) -> Operator:
        """``c · self`` for a scalar or a ``(*batch)`` tensor ``c``."""
        from torchgp.linalg.operators.structured import ConstantMulOperator

        return ConstantMulOperator(self, c)

    def _batch_slices(self, dim: int) -> list[Operator]:
        idx = [slice(None)] * (self.dim() - 2)
        out = []
        for i in range(self.shape[dim]):
            idx[dim] = i
            out.append(self._getitem_batch(tuple(idx)))
        return out

    def _sum_batch(self, dim: int) -> Operator:
        from torchgp.linalg.operators.structured import SumOperator

        return SumOperator(*self._batch_slices(dim))

    def _prod_batch(self, dim: int) -> Operator:
        from torchgp.linalg.operators.structured import ProductOperator

        return ProductOperator(*self._batch_slices(dim))

    def diagonal(self, offset: int = 0, dim1: int = -2, dim2: int = -1) -> torch.Tensor:
        """Diagonal entries, ``(*batch, n)``."""
        return self.to_dense().diagonal(offset=offset, dim1=dim1, dim2=dim2)

    def _matmul(self, rhs: torch.Tensor) -> torch.Tensor:
        return self.to_dense() @ rhs

    # ------------------------------------------------------------------ shape and dtype
    @property
    def batch_shape(self) -> torch.Size:
        return self.shape[:-2]

    @property
    def matrix_shape(self) -> torch.Size:
        return self.shape[-2:]

    def dim(self) -> int:
        return len(self.shape)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def size(self, i: int | None = None):
        return self.shape if i is None else self.shape[i]

    def numel(self) -> int:
        return math.prod(self.shape)

    def dense_nbytes(self) -> int:
        return self.numel() * torch.empty((), dtype=self.dtype).element_size()

    @property
    def requires_grad(self) -> bool:
        return any(t.requires_grad for t in self._tensors())

    def detach(self) -> Operator:
        """The operator cut from the autograd graph."""
        return self._map(lambda t: t.detach())

    def to(self, *args, **kwargs) -> Operator:
        """Cast or move like ``torch.Tensor.to``."""
        return self._map(lambda t: t.to(*args, **kwargs) if t.is_floating_point() else t.to(device=t.device))

    def double(self) -> Operator:
        return self.to(torch.float64)

    def float(self) -> Operator:
        return self.to(torch.float32)

    def cpu(self) -> Operator:
        return self.to("cpu")

    def cuda(self, device=None) -> Operator:
        return self.to(device or "cuda")

    # ------------------------------------------------------------------ dense views
    def to_dense(self) -> torch.Tensor:
        """The whole matrix, ``(*batch, n, m)``; refused if it exceeds ``settings.max_dense_memory``."""
        need = self.dense_nbytes()
        budget = settings.max_dense_memory.value()
        if need > budget:
            raise KernelMemoryError(
                f"A dense {'x'.join(map(str, self.shape))} {self.dtype} kernel matrix needs "
                f"{_fmt_bytes(need)}, over the budget of {_fmt_bytes(budget)} "
                "(settings.max_dense_memory). Use the iterative path, which never holds the matrix "
                "(it is taken automatically above settings.max_cholesky_size), a variational model "
                "(torchgp.models.ApproximateGP), or predict in smaller batches of test points."
            )
        return self._dense()

    def evaluate(self) -> torch.Tensor:
        """Alias of :meth:`to_dense` (GPyTorch's older name)."""
        return self.to_dense()

    def evaluate_kernel(self) -> Operator:
        """The operator with its kernel entries evaluated (itself unless it is a kernel matrix)."""
        return self

    def diag(self) -> torch.Tensor:
        """Alias of :meth:`diagonal`, ``(*batch, n)``."""
        return self.diagonal()

    # ------------------------------------------------------------------ products
    def matmul(self, rhs):
        """``self @ rhs``: ``rhs (*batch, m, k)`` → ``(*batch, n, k)``; ``rhs (m,)`` → ``(*batch, n)``."""
        if isinstance(rhs, Operator):
            return self._matmul_operator(rhs)
        if rhs.dim() == 1:
            return self._matmul(rhs.unsqueeze(-1)).squeeze(-1)
        if rhs.shape[-2] != self.shape[-1]:
            raise ShapeError(
                f"Cannot multiply an operator of shape {tuple(self.shape)} by a tensor of shape {tuple(rhs.shape)}: "
                f"the tensor needs {self.shape[-1]} rows."
            )
        return self._matmul(rhs)

    def _matmul_operator(self, other: Operator) -> Operator:
        from torchgp.linalg.operators.basic import DenseOperator

        return DenseOperator(self.matmul(other.to_dense()))

    def __matmul__(self, rhs):
        return self.matmul(rhs)

    def __rmatmul__(self, lhs):
        """``lhs @ self = (selfᵀ lhsᵀ)ᵀ``."""
        if lhs.dim() == 1:
            return self.mT.matmul(lhs.unsqueeze(-1)).squeeze(-1)
        return self.mT.matmul(lhs.mT).mT

    # ------------------------------------------------------------------ transposes, broadcasting, indexing
    @property
    def mT(self) -> Operator:
        return self._transpose()

    @property
    def T(self) -> Operator:
        return self._transpose()

    def transpose(self, dim0: int, dim1: int) -> Operator:
        d = sorted(x % self.dim() for x in (dim0, dim1))
        if d == [self.dim() - 2, self.dim() - 1]:
            return self._transpose()
        from torchgp.linalg.operators.basic import DenseOperator

        return DenseOperator(self.to_dense().transpose(dim0, dim1))

    def t(self) -> Operator:
        return self._transpose()

    def expand(self, *sizes) -> Operator:
        """Broadcast to ``(*batch, n, m)`` (the matrix dimensions stay; ``-1`` keeps a size)."""
        if len(sizes) == 1 and not isinstance(sizes[0], int):
            sizes = tuple(sizes[0])
        if len(sizes) < 2:
            raise ShapeError(f"expand needs (*batch, n, m); got {sizes}.")
        sizes = list(sizes)
        offset = len(sizes) - self.dim()
        for k in range(len(sizes)):
            if sizes[k] == -1 and k - offset >= 0:
                sizes[k] = self.shape[k - offset]
        if tuple(sizes[-2:]) != tuple(self.shape[-2:]):
            raise ShapeError(f"expand cannot change the matrix shape {tuple(self.shape[-2:])} to {tuple(sizes[-2:])}.")
        batch = torch.Size(sizes[:-2])
        if batch == self.batch_shape:
            return self
        broadcast_shapes(batch, self.batch_shape)  # raises on incompatible shapes
        return self._expand(batch)

    def __getitem__(self, idx):
        """GPyTorch's indexing: batch indices (and ``:`` for both matrix dims) give an operator,
        slices of rows and columns a sub-operator, integer or tensor row/column indices a tensor."""
        batch_idx, rows, cols = split_index(idx, self.dim())
        tensor_batch = any(isinstance(b, torch.Tensor) for b in batch_idx)
        if tensor_batch and (isinstance(rows, torch.Tensor) or isinstance(cols, torch.Tensor)):
            return self.to_dense()[(*batch_idx, rows, cols)]  # joint advanced indexing
        op = self if all(_full(b) for b in batch_idx) else self._getitem_batch(batch_idx)
        if _full(rows) and _full(cols):
            return op
        if isinstance(rows, slice) and isinstance(cols, slice):
            return op._getitem_slices(rows, cols)
        return op._getitem_entries(rows, cols)

    # ------------------------------------------------------------------ reductions over batch dimensions
    def sum(self, dim: int | None = None):
        """Sum over a batch dimension (an operator), a matrix dimension (a tensor) or everything (a scalar)."""
        ones = torch.ones(self.shape[-1], 1, dtype=self.dtype, device=self.device)
        if dim is None:
            return self.matmul(ones).sum()
        d = dim % self.dim()
        if d == self.dim() - 1:
            return self.matmul(ones).squeeze(-1)
        if d == self.dim() - 2:
            ones_n = torch.ones(self.shape[-2], 1, dtype=self.dtype, device=self.device)
            return self.mT.matmul(ones_n).squeeze(-1)
        return self._sum_batch(d)

    def prod(self, dim: int):
        """Element-wise product over a batch dimension (an operator)."""
        d = dim % self.dim()
        if d >= self.dim() - 2:
            return self.to_dense().prod(dim)
        return self._prod_batch(d)

    # ------------------------------------------------------------------ algebra
    def add_diagonal(self, diag) -> Operator:
        """``self + diag(d)`` with ``d`` broadcastable to ``(*batch, n)``."""
        from torchgp.linalg.operators.basic import AddedDiagOperator

        return AddedDiagOperator(self, _diag_tensor(diag, self))

    def add_jitter(self, jitter_val: float = 1e-3) -> Operator:
        """``self + jitter · I``."""
        return self.add_diagonal(torch.full((), jitter_val, dtype=self.dtype, device=self.device))

    def _add_operator(self, other: Operator) -> Operator:
        """``self + other``; subclasses keep structure where it pays."""
        from torchgp.linalg.operators.structured import SumOperator

        return SumOperator(self, other)

    def __add__(self, other):
        from torchgp.linalg.operators.basic import DenseOperator

        if isinstance(other, (int, float)) and other == 0:
            return self
        if isinstance(other, Operator):
            return self._add_operator(other)
        if isinstance(other, (int, float)) or (isinstance(other, torch.Tensor) and other.dim() < 2):
            other = torch.as_tensor(other, dtype=self.dtype, device=self.device)
            other = other.expand(*self.batch_shape, *self.shape[-2:]) if other.dim() == 0 else other
            other = other.expand(*self.shape[:-1], other.shape[-1]) if other.dim() == 1 else other
        if isinstance(other, torch.Tensor):
            return self._add_operator(DenseOperator(other))
        return NotImplemented

    def __radd__(self, other):
        return self.__add__(other)

    def __sub__(self, other):
        return self + (-other)

    def __rsub__(self, other):
        return (-self) + other

    def __neg__(self) -> Operator:
        return self._scale(-1.0)

    def mul(self, other) -> Operator:
        """Element-wise (Hadamard) product with a scalar, a tensor or another operator."""
        from torchgp.linalg.operators.basic import DenseOperator

        if _is_scalar(other):
            if isinstance(other, torch.Tensor):
                other = other.reshape(())
            return self._scale(other)
        if isinstance(other, torch.Tensor):
            if other.dim() >= 2 and other.shape[-2:] == (1, 1):
                return self._scale(other[..., 0, 0])
            other = DenseOperator(other.expand(broadcast_shapes(other.shape, self.shape)))
        if not isinstance(other, Operator):
            raise TypeError(f"Cannot multiply an operator by {type(other).__name__}.")
        return self._mul_operator(other)

    def _mul_operator(self, other: Operator) -> Operator:
        from torchgp.linalg.operators.structured import ProductOperator

        return ProductOperator(self, other)

    def __mul__(self, other):
        if not isinstance(other, (int, float, torch.Tensor, Operator)):
            return NotImplemented
        return self.mul(other)

    def __rmul__(self, other):
        return self.__mul__(other)

    def __truediv__(self, other):
        if not _is_scalar(other):
            return NotImplemented
        return self.mul(1.0 / other)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(shape={tuple(self.shape)}, dtype={self.dtype})"


def _diag_tensor(diag, op: Operator) -> torch.Tensor:
    if isinstance(diag, Operator):
        diag = diag.diagonal()
    diag = torch.as_tensor(diag, dtype=op.dtype, device=op.device)
    if diag.dim() > 0 and diag.shape[-1] not in (1, op.shape[-1]):
        raise ShapeError(
            f"add_diagonal: the diagonal has {diag.shape[-1]} entries but the operator is "
            f"{op.shape[-2]}x{op.shape[-1]}; pass a scalar or a (*batch, {op.shape[-1]}) tensor."
        )
    return diag
