"""Covariance operators: what the solvers need to know about a (possibly huge) matrix.

An :class:`Operator` has a shape ``(*batch, n, m)``, a dtype and device, and can
``to_dense()``, ``matmul(V)`` and give its ``diagonal()``. Three kinds exist:

* :class:`DenseOperator` wraps a tensor;
* :class:`KernelOperator` knows ``(kernel, x1, x2)`` and evaluates entries only when asked:
  ``to_dense()`` refuses up front (``KernelMemoryError``) a matrix over ``settings.max_dense_memory``,
  and ``matmul`` runs block by block, never holding the whole matrix;
* :class:`AddedDiagOperator` is ``base + diag(d)`` (a kernel matrix plus observation noise).

There is no general lazy algebra beyond this: sums and products of kernels are formed inside the
kernels' forward passes, block by block.
"""

from __future__ import annotations

import torch

from torchgp import settings
from torchgp._shapes import broadcast_shapes
from torchgp.errors import KernelMemoryError, ShapeError


def _fmt_bytes(nbytes: float) -> str:
    """``20480`` → ``'20.0 KiB'``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if nbytes < 1024 or unit == "GiB":
            return f"{nbytes:.1f} {unit}" if unit != "B" else f"{int(nbytes)} B"
        nbytes /= 1024
    return f"{nbytes:.1f} GiB"  # pragma: no cover


class Operator:
    """A matrix (batch) known by its products; subclasses implement ``_dense`` and ``shape``."""

    shape: torch.Size
    dtype: torch.dtype
    device: torch.device

    # --- what subclasses provide -------------------------------------------------------
    def _dense(self) -> torch.Tensor:
        raise NotImplementedError

    def diagonal(self) -> torch.Tensor:
        """Diagonal entries, ``(*batch, n)``."""
        return self.to_dense().diagonal(dim1=-2, dim2=-1)

    def matmul(self, rhs: torch.Tensor) -> torch.Tensor:
        """``self @ rhs`` with ``rhs`` of shape ``(*batch, m, k)``."""
        return self.to_dense() @ rhs

    # --- shared ---------------------------------------------------------------------------
    @property
    def batch_shape(self) -> torch.Size:
        return self.shape[:-2]

    def dim(self) -> int:
        return len(self.shape)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def size(self, i: int | None = None):
        return self.shape if i is None else self.shape[i]

    def dense_nbytes(self) -> int:
        numel = 1
        for s in self.shape:
            numel *= s
        return numel * torch.empty((), dtype=self.dtype).element_size()

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

    evaluate = to_dense

    def __matmul__(self, rhs):
        return self.matmul(rhs)

    def add_diagonal(self, diag: torch.Tensor) -> AddedDiagOperator:
        """``self + diag(d)`` with ``d`` broadcastable to ``(*batch, n)``."""
        return AddedDiagOperator(self, diag)

    def add_jitter(self, jitter: float = 1e-6) -> AddedDiagOperator:
        return self.add_diagonal(torch.full((), jitter, dtype=self.dtype, device=self.device))

    def __add__(self, other):
        if isinstance(other, Operator):
            other = other.to_dense()
        return self.to_dense() + other

    __radd__ = __add__

    def __mul__(self, other):
        return self.to_dense() * other

    __rmul__ = __mul__

    def __repr__(self) -> str:
        return f"{type(self).__name__}(shape={tuple(self.shape)}, dtype={self.dtype})"


class DenseOperator(Operator):
    """A tensor seen as an operator."""

    def __init__(self, tensor: torch.Tensor):
        if tensor.dim() < 2:
            raise ShapeError(f"A covariance must have at least 2 dimensions; got shape {tuple(tensor.shape)}.")
        self.tensor = tensor
        self.shape, self.dtype, self.device = tensor.shape, tensor.dtype, tensor.device

    def _dense(self):
        return self.tensor

    def to_dense(self):
        return self.tensor

    def matmul(self, rhs):
        return self.tensor @ rhs

    def diagonal(self):
        return self.tensor.diagonal(dim1=-2, dim2=-1)


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

    def diagonal(self):
        if self.shape[-1] != self.shape[-2]:
            raise ShapeError(f"diagonal() needs a square kernel matrix; got shape {tuple(self.shape)}.")
        return self.kernel.evaluate_block(self.x1, self.x2, diag=True, **self.params).expand(self.shape[:-1])

    def block(self, start: int, stop: int) -> torch.Tensor:
        """Rows ``start:stop`` of the matrix, ``(*batch, stop - start, m)``, differentiable."""
        x1 = self.x1[..., start:stop, :]
        return self.kernel.evaluate_block(x1, self.x2, **self.params)

    def matmul(self, rhs):
        n = self.shape[-2]
        block = settings.kernel_block_size.value()
        if n <= block or self.dense_nbytes() <= min(settings.max_dense_memory.value(), 2**27):
            return self._dense() @ rhs
        from torchgp.linalg.blockwise import blockwise_matmul

        return blockwise_matmul(self, rhs)


class AddedDiagOperator(Operator):
    """``base + diag(d)``: a kernel matrix plus (homo- or heteroskedastic) noise.

    Args:
        base: an :class:`Operator`, ``(*batch, n, n)``.
        diag: ``(*batch, n)`` (or broadcastable, e.g. a scalar noise).
    """

    def __init__(self, base: Operator, diag: torch.Tensor):
        self.base = as_operator(base)
        self.diag = diag
        batch = broadcast_shapes(self.base.shape[:-1], diag.shape)
        self.shape = torch.Size([*batch, self.base.shape[-1]])
        self.dtype, self.device = self.base.dtype, self.base.device

    def _dense(self):
        d = self.diag.expand(self.shape[:-1])
        return self.base.to_dense() + torch.diag_embed(d)

    def diagonal(self):
        return self.base.diagonal() + self.diag

    def matmul(self, rhs):
        return self.base.matmul(rhs) + self.diag.unsqueeze(-1) * rhs


def as_operator(x) -> Operator:
    """Wrap a tensor as :class:`DenseOperator`; return an operator unchanged."""
    if isinstance(x, Operator):
        return x
    if isinstance(x, torch.Tensor):
        return DenseOperator(x)
    raise TypeError(f"Expected a tensor or a torchgp Operator; got {type(x).__name__}.")
