r"""``ScaleKernel``: a learned output scale times a base kernel."""

from __future__ import annotations

import torch

from torchgp.constraints import Positive
from torchgp.kernels.kernel import Kernel
from torchgp.kernels.stationary import StationaryKernel


class ScaleKernel(Kernel):
    r"""Scaled kernel :math:`k(x, x') = s\, k_{\text{base}}(x, x')`.

    Args:
        base_kernel: the kernel to scale.
        outputscale_prior, outputscale_constraint: prior/constraint on s (default ``Positive()``).
        batch_shape: batch of output scales (default: the base kernel's).

    Shapes:
        as the base kernel; ``outputscale`` has shape ``batch_shape``.
    """

    def __init__(self, base_kernel: Kernel, outputscale_prior=None, outputscale_constraint=None, **kwargs):
        if not isinstance(base_kernel, Kernel):
            raise TypeError(f"ScaleKernel needs a torchgp Kernel; got {type(base_kernel).__name__}.")
        kwargs.setdefault("batch_shape", base_kernel.batch_shape)
        super().__init__(**kwargs)
        self.base_kernel = base_kernel
        constraint = Positive() if outputscale_constraint is None else outputscale_constraint
        init = constraint.transform(torch.zeros(self.batch_shape))
        self.register_constrained("outputscale", init, constraint, outputscale_prior)

    @property
    def is_stationary(self) -> bool:
        return self.base_kernel.is_stationary

    def _scale(self, last_dim_is_batch: bool, trailing: int) -> torch.Tensor:
        """s shaped to multiply a ``(*batch, [d,] n[, m])`` base result (``trailing`` = 1 or 2)."""
        s = self.outputscale
        if last_dim_is_batch:
            s = s.unsqueeze(-1)
        return s.reshape(*s.shape, *([1] * trailing)) if s.dim() else s

    def _fuses(self, last_dim_is_batch: bool) -> bool:
        """Whether s enters the base kernel's fused node (one n × m output, no extra n² pass)."""
        cls = type(self.base_kernel)
        # only the base class's own forward/forward_diag know ``outputscale``; a subclass overriding them would drop it
        return (
            isinstance(self.base_kernel, StationaryKernel)
            and cls.forward is StationaryKernel.forward
            and cls.forward_diag is StationaryKernel.forward_diag
            and not last_dim_is_batch
        )

    def forward(self, x1, x2, last_dim_is_batch=False, **params):
        if self._fuses(last_dim_is_batch):
            return self.base_kernel.evaluate_block(x1, x2, outputscale=self.outputscale, **params)
        base = self.base_kernel.evaluate_block(x1, x2, last_dim_is_batch=last_dim_is_batch, **params)
        return base * self._scale(last_dim_is_batch, 2)

    def forward_diag(self, x1, x2, last_dim_is_batch=False, **params):
        if self._fuses(last_dim_is_batch):
            return self.base_kernel.evaluate_block(x1, x2, diag=True, outputscale=self.outputscale, **params)
        base = self.base_kernel.evaluate_block(x1, x2, diag=True, last_dim_is_batch=last_dim_is_batch, **params)
        return base * self._scale(last_dim_is_batch, 1)
