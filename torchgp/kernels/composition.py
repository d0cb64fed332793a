r"""Sums and products of kernels: ``k1 + k2`` and ``k1 * k2`` (R&W 2006, §4.2.4).

:class:`AdditiveKernel` and :class:`ProductKernel` are defined next to :class:`~torchgp.kernels.Kernel`
in ``torchgp.kernels.kernel`` (as in ``gpytorch.kernels.kernel``): ``Kernel.__add__`` builds one and each
is a ``Kernel``, so one module holds both and no import goes both ways. This module keeps the names
importable from here.
"""

from __future__ import annotations

from torchgp.kernels.kernel import AdditiveKernel, ProductKernel, _Combination

__all__ = ["AdditiveKernel", "ProductKernel", "_Combination"]
