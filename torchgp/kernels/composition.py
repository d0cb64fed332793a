r"""Sums and products of kernels: ``k1 + k2`` and ``k1 * k2`` (R&W 2006, §4.2.4)."""

from __future__ import annotations

import functools
import operator

import torch

from torchgp._shapes import broadcast_shapes
from torchgp.kernels.kernel import Kernel


class _Combination(Kernel):
    """Shared body of sums and products; flattens nested combinations of the same kind."""

    _op = None

    def __init__(self, *kernels: Kernel):
        if not kernels:
            raise ValueError(f"{type(self).__name__} needs at least one kernel.")
        for k in kernels:
            if not isinstance(k, Kernel):
                raise TypeError(f"{type(self).__name__} takes torchgp kernels; got {type(k).__name__}.")
        batch = broadcast_shapes(*(k.batch_shape for k in kernels))
        super().__init__(batch_shape=batch)
        flat = []
        for k in kernels:
            flat.extend(k.kernels if type(k) is type(self) else [k])
        self.kernels = torch.nn.ModuleList(flat)

    @property
    def is_stationary(self) -> bool:
        return all(k.is_stationary for k in self.kernels)

    def forward(self, x1, x2, last_dim_is_batch=False, **params):
        parts = (k.evaluate_block(x1, x2, last_dim_is_batch=last_dim_is_batch, **params) for k in self.kernels)
        return functools.reduce(self._op, parts)

    def forward_diag(self, x1, x2, last_dim_is_batch=False, **params):
        # each part's own diagonal: O(n) for parts with a cheap one
        parts = (
            k.evaluate_block(x1, x2, diag=True, last_dim_is_batch=last_dim_is_batch, **params) for k in self.kernels
        )
        return functools.reduce(self._op, parts)


class AdditiveKernel(_Combination):
    r""":math:`k(x, x') = \sum_i k_i(x, x')`."""

    _op = staticmethod(operator.add)


class ProductKernel(_Combination):
    r""":math:`k(x, x') = \prod_i k_i(x, x')` (elementwise)."""

    _op = staticmethod(operator.mul)
