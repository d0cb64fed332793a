r"""Symmetric Toeplitz operators multiplied by FFT: the grid covariance ``K_UU`` of a stationary kernel.

A stationary kernel on a regular 1-D grid ``u_j = u_0 + j h`` gives ``K_UU[i, j] = k(|i - j| h) = c_{|i-j|}``,
a symmetric Toeplitz matrix fixed by its first column ``c`` (``m`` numbers). Embedded in the circulant
matrix of size ``2m`` with first column ``[c_0, …, c_{m-1}, 0, c_{m-1}, …, c_1]``, it is multiplied by the
discrete Fourier transform (Golub & Van Loan 2013, §4.8.2; Wilson & Nickisch 2015, §3.1):

.. math::
    K_{UU} v = \big[\mathcal F^{-1}\big(\mathcal F(\tilde c) \odot \mathcal F([v; 0])\big)\big]_{0:m},

``O(m log m)`` per column instead of ``O(m²)``. On a ``d``-D grid the covariance of a product kernel is
the Kronecker product of such factors (:func:`kronecker_toeplitz`).
"""

from __future__ import annotations

import torch

from torchgp._shapes import broadcast_shapes
from torchgp.errors import ShapeError
from torchgp.linalg.operators import KroneckerProductOperator, Operator

__all__ = ["ToeplitzOperator", "kronecker_toeplitz", "toeplitz_entries"]


def index_batch(t: torch.Tensor, batch_shape, batch_idx, trailing: int) -> torch.Tensor:
    """A batch index applied to ``t (*batch', *rest)`` (``len(rest) == trailing``), broadcast to ``batch_shape`` first."""
    t = t.expand(*batch_shape, *t.shape[t.dim() - trailing :])
    return t[(*batch_idx, *([slice(None)] * trailing))]


def _circulant_fft(column: torch.Tensor) -> torch.Tensor:
    """``rfft`` of the ``2m`` circulant embedding of the symmetric Toeplitz column ``(*batch, m)``."""
    m = column.shape[-1]
    zero = column.new_zeros(*column.shape[:-1], 1)
    circ = torch.cat([column, zero, column[..., 1:].flip(-1)], -1)  # length 2m
    return torch.fft.rfft(circ, n=2 * m)


def toeplitz_entries(column: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Entries ``T[rows, cols] = c_{|row - col|}`` of the symmetric Toeplitz matrix with first column ``(*batch, m)``.

    Shapes:
        ``rows``, ``cols``: long tensors broadcasting to one shape ``s`` (no batch dimensions); the result is
        ``(*batch, *s)``.
    """
    lag = (rows - cols).abs()
    batch = column.shape[:-1]
    out_shape = broadcast_shapes(batch + (1,) * lag.dim(), (1,) * len(batch) + lag.shape)
    flat_lag = lag.expand(out_shape[len(batch) :]).reshape(*([1] * len(batch)), -1).expand(*batch, -1)
    return column.gather(-1, flat_lag).reshape(out_shape)


class ToeplitzOperator(Operator):
    r"""Symmetric Toeplitz ``T[i, j] = c_{|i-j|}`` from its first column, products by FFT in ``O(m log m)``.

    Args:
        column: the first column ``c``, ``(*batch, m)``; ``T`` is positive semi-definite when ``c`` comes from a
            stationary kernel on a regular grid.

    Shapes:
        ``(*batch, m, m)``; ``matmul``: ``(*batch, m, k) → (*batch, m, k)``.

    Example:
        >>> import torch
        >>> T = ToeplitzOperator(torch.tensor([2.0, 1.0, 0.5]))
        >>> T.to_dense()
        tensor([[2.0000, 1.0000, 0.5000],
                [1.0000, 2.0000, 1.0000],
                [0.5000, 1.0000, 2.0000]])
    """

    def __init__(self, column: torch.Tensor):
        if column.dim() < 1 or column.shape[-1] < 1:
            raise ShapeError(f"ToeplitzOperator needs a first column of shape (*batch, m); got {tuple(column.shape)}.")
        self.column = column
        m = column.shape[-1]
        self.shape = torch.Size([*column.shape[:-1], m, m])
        self.dtype, self.device = column.dtype, column.device

    def _dense(self):
        m = self.shape[-1]
        idx = torch.arange(m, device=self.device)
        return toeplitz_entries(self.column, idx.unsqueeze(-1), idx.unsqueeze(-2))

    def _matmul(self, rhs):
        m = self.shape[-1]
        if m <= 64:  # a small dense product is cheaper than two FFTs
            return self._dense() @ rhs
        batch = broadcast_shapes(self.batch_shape, rhs.shape[:-2])
        fc = _circulant_fft(self.column).unsqueeze(-1)  # (*batch, m + 1, 1)
        fv = torch.fft.rfft(rhs, n=2 * m, dim=-2)  # (*batch, m + 1, k)
        out = torch.fft.irfft(fc * fv, n=2 * m, dim=-2)[..., :m, :]
        return out.expand(*batch, m, rhs.shape[-1])

    def diagonal(self, offset: int = 0, dim1: int = -2, dim2: int = -1):
        if (offset, dim1 % self.dim(), dim2 % self.dim()) != (0, self.dim() - 2, self.dim() - 1):
            return super().diagonal(offset, dim1, dim2)
        return self.column[..., :1].expand(*self.batch_shape, self.shape[-1])

    def entries(self, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """``T[rows, cols]`` pairwise (see :func:`toeplitz_entries`)."""
        return toeplitz_entries(self.column, rows, cols)

    def _tensors(self):
        return [self.column]

    def _map(self, fn):
        return ToeplitzOperator(fn(self.column))

    def _transpose(self):
        return self

    def _expand(self, batch_shape):
        return ToeplitzOperator(self.column.expand(*batch_shape, self.shape[-1]))

    def _getitem_batch(self, batch_idx):
        return ToeplitzOperator(index_batch(self.column, self.batch_shape, batch_idx, 1))

    def _scale(self, c):
        c = torch.as_tensor(c, dtype=self.dtype, device=self.device)
        return ToeplitzOperator(self.column * c.unsqueeze(-1))

    def _add_operator(self, other):
        if isinstance(other, ToeplitzOperator):  # the sum of Toeplitz matrices is Toeplitz
            return ToeplitzOperator(self.column + other.column)
        return super()._add_operator(other)


def kronecker_toeplitz(columns) -> Operator:
    """``T_1 ⊗ … ⊗ T_d`` from the first columns ``(*batch, m_i)`` of ``d`` symmetric Toeplitz factors.

    One column gives the :class:`ToeplitzOperator` itself. Shapes: ``(*batch, Π m_i, Π m_i)``.
    """
    factors = [ToeplitzOperator(c) for c in columns]
    return factors[0] if len(factors) == 1 else KroneckerProductOperator(*factors)
