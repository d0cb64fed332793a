r"""``MultiDeviceKernel``: the rows of a kernel matrix computed on several devices of one process.

``k(X1, X2)`` is split into row blocks ``k(X1_b, X2)``, one per device in ``device_ids`` (GPyTorch's
``MultiDeviceKernel``, a ``DataParallel`` over the rows). Each block runs the base kernel with its parameters
and buffers copied to that device (the copies are differentiable, so gradients reach the parameters where
they live) and the blocks are gathered on ``output_device``. CUDA launches are asynchronous, so the blocks of
different GPUs run at the same time; on CPU (``device_ids`` all ``"cpu"``) the split is exercised exactly.
"""

from __future__ import annotations

import torch
from torch.func import functional_call

from torchgp import settings
from torchgp.errors import InputError
from torchgp.kernels.kernel import Kernel

__all__ = ["MultiDeviceKernel"]


class MultiDeviceKernel(Kernel):
    """A base kernel whose matrix rows are spread over ``device_ids`` and gathered on ``output_device``.

    Args:
        base_kernel: the kernel to distribute (stored as ``module``, GPyTorch's ``state_dict`` key; also
            :attr:`base_kernel`).
        device_ids: devices (``torch.device``, strings or CUDA indices) for the row blocks, in order.
        output_device: where the matrix is gathered (default ``device_ids[0]``).
        create_cuda_context: touch every CUDA device once at construction (GPyTorch's warm-up).

    Shapes:
        ``x1 (*batch, n, d)``, ``x2 (*batch, m, d)`` → ``(*batch, n, m)`` on ``output_device``; row block ``b``
        has about ``n / len(device_ids)`` rows.
    """

    def __init__(self, base_kernel: Kernel, device_ids, output_device=None, create_cuda_context: bool = True, **kwargs):
        super().__init__(**kwargs)
        device_ids = [torch.device(f"cuda:{d}" if isinstance(d, int) else d) for d in device_ids]
        if not device_ids:
            raise InputError("MultiDeviceKernel needs at least one device in device_ids.")
        if create_cuda_context:
            for d in device_ids:
                if d.type == "cuda":
                    torch.empty(0, device=d)
        self.module = base_kernel
        self.device_ids = device_ids
        self.output_device = torch.device(output_device) if output_device is not None else device_ids[0]

    @property
    def base_kernel(self) -> Kernel:
        return self.module

    @property
    def batch_shape(self) -> torch.Size:
        return self.module.batch_shape

    @batch_shape.setter
    def batch_shape(self, value):
        self.module.batch_shape = value

    @property
    def is_stationary(self) -> bool:
        return self.module.is_stationary

    def num_outputs_per_input(self, x1, x2) -> int:
        return self.module.num_outputs_per_input(x1, x2)

    def _on(self, device: torch.device, x1, x2, diag: bool):
        """The base kernel's block ``k(x1, x2)`` computed on ``device``, differentiable, moved to ``output_device``."""
        state = {name: t.to(device) for name, t in [*self.module.named_parameters(), *self.module.named_buffers()]}
        a = x1.to(device)
        b = a if x2 is x1 else x2.to(device)
        with settings.lazily_evaluate_kernels(False):
            out = functional_call(self.module, state, (a, b), {"diag": diag})
        if not isinstance(out, torch.Tensor):
            out = out.to_dense()
        return out.to(self.output_device)

    def _rows(self, x1, x2, diag: bool):
        n = x1.shape[-2]
        k = min(len(self.device_ids), max(n, 1))
        if k == 1:
            return self._on(self.device_ids[0], x1, x2, diag)
        bounds = [round(i * n / k) for i in range(k + 1)]
        blocks = []
        for dev, (s, e) in zip(self.device_ids, zip(bounds, bounds[1:])):
            x2_b = x2[..., s:e, :] if diag else x2
            blocks.append(self._on(dev, x1[..., s:e, :], x2_b, diag))
        return torch.cat(blocks, dim=-1 if diag else -2)

    def forward(self, x1, x2, **params):
        return self._rows(x1, x2, diag=False)

    def forward_diag(self, x1, x2, **params):
        return self._rows(x1, x2, diag=True)
