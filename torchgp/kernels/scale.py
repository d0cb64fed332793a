r"""``ScaleKernel``: a learned output scale times a base kernel."""

from __future__ import annotations

import torch

from torchgp.constraints import Positive
from torchgp.kernels.kernel import Kernel
from torchgp.linalg.operators import KernelOperator


class ScaleKernel(Kernel):
    r"""Scaled kernel :math:`k(x, x') = s\, k_{\text{base}}(x, x')`.

    Args:
        base_kernel: the kernel to scale.
        outputscale_prior, outputscale_constraint: prior/constraint on s (default ``Positive()``).
        batch_shape: batch of output scales (default: the base kernel's).

    Over a stationary kernel, or a product of kernels, ``s`` is handed to the base kernel's fused node
    (``forward(x1, x2, outputscale=s)``), so scaling costs no pass over the n × m matrix.

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
        self._register_load_state_dict_pre_hook(_gpytorch_active_dims, with_module=True)

    @property
    def is_stationary(self) -> bool:
        return self.base_kernel.is_stationary

    def num_outputs_per_input(self, x1, x2) -> int:
        return self.base_kernel.num_outputs_per_input(x1, x2)

    def _scale(self, last_dim_is_batch: bool, trailing: int) -> torch.Tensor:
        """s shaped to multiply a ``(*batch, [d,] n[, m])`` base result (``trailing`` = 1 or 2)."""
        s = self.outputscale
        if last_dim_is_batch:
            s = s.unsqueeze(-1)
        return s.reshape(*s.shape, *([1] * trailing)) if s.dim() else s

    def _lazy(self, x1, x2, last_dim_is_batch: bool = False, **params):
        """``s · k_base(x1, x2)`` keeping the base kernel's structure (interpolated, low rank, Kronecker).

        A base kernel whose matrix is a plain lazy kernel matrix is scaled inside its tiles as usual.
        """
        if last_dim_is_batch or type(self.base_kernel)._lazy is Kernel._lazy:
            return super()._lazy(x1, x2, last_dim_is_batch=last_dim_is_batch, **params)
        z1, z2 = x1, x2
        if self.active_dims is not None:
            z1 = x1.index_select(-1, self.active_dims)
            z2 = z1 if x2 is x1 else x2.index_select(-1, self.active_dims)
        inner = self.base_kernel(z1, z2, **params)
        if isinstance(inner, KernelOperator):  # the base fell back to its tiled matrix: scale in the tiles
            return super()._lazy(x1, x2, **params)
        return inner._scale(self.outputscale)

    def _fuses(self, last_dim_is_batch: bool) -> bool:
        """Whether s enters the base kernel's fused node (one n × m output, no extra n² pass).

        True for a stationary base and for a product (whose exponential factors share one node), unless
        their forward is overridden (a subclass's own forward would not know ``outputscale``).
        """
        return not last_dim_is_batch and self.base_kernel._takes_outputscale()

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


def _gpytorch_active_dims(module, state_dict, prefix, *args):
    """GPyTorch's ScaleKernel saves its base kernel's ``active_dims`` as its own (``<prefix>active_dims``).

    torchgp's ScaleKernel leaves column selection to the base kernel, so that key, when it repeats the base
    kernel's ``active_dims``, carries nothing to load: it is consumed, and GPyTorch checkpoints load strictly.
    A different value stays in the dict and is reported as unexpected.
    """
    key = prefix + "active_dims"
    given, base = state_dict.get(key), module.base_kernel.active_dims
    if module.active_dims is None and given is not None and base is not None and torch.equal(given.to(base), base):
        del state_dict[key]
