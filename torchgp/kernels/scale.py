r"""``ScaleKernel``: a learned output scale times a base kernel."""

from __future__ import annotations

import torch

from torchgp.constraints import Positive
from torchgp.kernels.kernel import Kernel


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

    def forward(self, x1, x2, diag=False, last_dim_is_batch=False, **params):
        base = self.base_kernel.evaluate_block(x1, x2, diag=diag, last_dim_is_batch=last_dim_is_batch, **params)
        s = self.outputscale
        if last_dim_is_batch:
            s = s.unsqueeze(-1)
        return base * (s[..., None] if diag else s[..., None, None]) if s.dim() else base * s
