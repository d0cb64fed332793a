r"""``AdditiveStructureKernel`` and ``ProductStructureKernel``: one base kernel per input dimension.

.. math::
    k_{\text{add}}(x, x') = \sum_{i=1}^d k(x_i, x'_i),\qquad k_{\text{prod}}(x, x') = \prod_{i=1}^d k(x_i, x'_i)

(Duvenaud et al. 2011, first-order additive kernels; Gardner et al. 2018, "SKIP", for products). The base
kernel sees each dimension as a batch member, ``(*batch, d, n, 1)`` (GPyTorch's ``last_dim_is_batch``), so a
one-dimensional :class:`~torchgp.kernels.GridInterpolationKernel` gives KISS-GP in ``d`` dimensions with one
1-D grid: the sum of ``d`` interpolated operators, each product ``O(n + m log m)``.
"""

from __future__ import annotations

import torch

from torchgp import settings
from torchgp.errors import ShapeError
from torchgp.kernels.kernel import Kernel
from torchgp.linalg.interpolated import InterpolatedOperator
from torchgp.linalg.skip import skip_product

__all__ = ["AdditiveStructureKernel", "ProductStructureKernel"]


class _StructureKernel(Kernel):
    """A base kernel applied to each of ``num_dims`` input columns as a batch, then reduced over them."""

    def __init__(self, base_kernel: Kernel, num_dims: int, active_dims=None):
        super().__init__(active_dims=active_dims)
        self.base_kernel = base_kernel
        self.num_dims = int(num_dims)

    # the base kernel sees one column at a time, not this kernel's inputs
    _children_see_inputs = False

    @property
    def is_stationary(self) -> bool:
        return self.base_kernel.is_stationary

    @property
    def batch_shape(self) -> torch.Size:
        b = self.base_kernel.batch_shape
        return b[:-1] if len(b) and b[-1] == self.num_dims else b

    @batch_shape.setter
    def batch_shape(self, value):
        self._batch_shape = torch.Size(value)

    def _columns(self, x: torch.Tensor) -> torch.Tensor:
        """``(*batch, n, d)`` → ``(*batch, d, n, 1)``."""
        if x.shape[-1] != self.num_dims:
            raise ShapeError(
                f"{type(self).__name__} was built with num_dims={self.num_dims} but got inputs with {x.shape[-1]} "
                f"columns (shape {tuple(x.shape)}); build it with num_dims={x.shape[-1]} or select columns with "
                "active_dims."
            )
        return x.mT.unsqueeze(-1)

    def _reduce(self, K, dim: int):
        raise NotImplementedError

    def _combine(self, parts: list):
        raise NotImplementedError

    def _lazy(self, x1, x2, last_dim_is_batch: bool = False, **params):
        if last_dim_is_batch or params:
            return super()._lazy(x1, x2, last_dim_is_batch=last_dim_is_batch, **params)
        if self.active_dims is not None:
            same = x1 is x2
            x1 = x1.index_select(-1, self.active_dims)
            x2 = x1 if same else x2.index_select(-1, self.active_dims)
        return self._per_column(x1, x2, lambda a, b: self.base_kernel(a, b), -3)

    def forward(self, x1, x2, **params):
        return self._per_column(x1, x2, lambda a, b: self.base_kernel.evaluate_block(a, b), -3)

    def forward_diag(self, x1, x2, **params):
        return self._per_column(x1, x2, lambda a, b: self.base_kernel.evaluate_block(a, b, diag=True), -2)

    def _per_column(self, x1, x2, fn, dim: int):
        """``fn`` on the columns as a batch ``(*batch, d, n, 1)`` reduced over ``d``; a base kernel whose own batch
        does not end in ``d`` is called once per column instead (its batch would not line up with the columns)."""
        c1 = self._columns(x1)
        c2 = c1 if x2 is x1 else self._columns(x2)
        b = self.base_kernel.batch_shape
        if len(b) == 0 or b[-1] in (1, self.num_dims):
            return self._reduce(fn(c1, c2), dim)
        parts = [fn(c1[..., i, :, :], c2[..., i, :, :]) for i in range(self.num_dims)]
        return self._combine(parts)

    def num_outputs_per_input(self, x1, x2) -> int:
        return 1


def _use_skip(K) -> bool:
    """Whether the stacked factors ``K (*batch, d, n, n)`` get SKIP's low-rank product: symmetric interpolated
    one-dimensional kernels above ``settings.max_cholesky_size``."""
    return (
        isinstance(K, InterpolatedOperator)
        and K.symmetric
        and K.dim() >= 3
        and K.shape[-1] > settings.max_cholesky_size.value()
    )


class AdditiveStructureKernel(_StructureKernel):
    r"""``k(x, x') = Σ_i k_base(x_i, x'_i)`` over ``num_dims`` input dimensions.

    Args:
        base_kernel: a kernel of one input dimension (shared by all dimensions, or with ``batch_shape=(d,)``
            for one set of hyperparameters per dimension).
        num_dims: ``d``.
        active_dims: as :class:`Kernel`.

    Shapes:
        ``x1 (*batch, n, d)``, ``x2 (*batch, m, d)`` → lazy ``(*batch, n, m)`` (a sum of the base kernel's
        operators).
    """

    def _reduce(self, K, dim):
        return K.sum(dim)

    def _combine(self, parts):
        out = parts[0]
        for p in parts[1:]:
            out = out + p
        return out


class ProductStructureKernel(_StructureKernel):
    r"""``k(x, x') = Π_i k_base(x_i, x'_i)`` over ``num_dims`` input dimensions (SKIP's structure).

    Args:
        base_kernel: a kernel of one input dimension (shared, or ``batch_shape=(d,)``).
        num_dims: ``d``.
        active_dims: as :class:`Kernel`.

    Shapes:
        ``x1 (*batch, n, d)``, ``x2 (*batch, m, d)`` → lazy ``(*batch, n, m)`` (an element-wise product of the
        base kernel's operators; its products with vectors form the matrix).

    Over a one-dimensional :class:`~torchgp.kernels.GridInterpolationKernel` (optionally scaled) and above
    ``settings.max_cholesky_size`` training points, the symmetric kernel matrix is SKIP's (Gardner et al. 2018):
    a rank-``settings.max_root_decomposition_size`` Lanczos projection of each interpolated factor and of each
    partial Hadamard product (:func:`torchgp.linalg.skip.skip_product`), ``O(d n r³)`` time and ``O(n r)``
    memory, never ``n × n``. Below that size (and for cross-covariances) the product is exact.
    """

    def _reduce(self, K, dim):
        if _use_skip(K):
            return skip_product(K, int(settings.max_root_decomposition_size.value()), dim)
        return K.prod(dim)

    def _combine(self, parts):
        out = parts[0]
        for p in parts[1:]:
            out = out * p
        return out
