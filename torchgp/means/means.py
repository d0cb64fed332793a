r"""Prior mean functions: ``mean(x (*batch, n, d)) → (*batch, n)``."""

from __future__ import annotations

import torch

from torchgp._shapes import broadcast_shapes
from torchgp.kernels.kernel import as_inputs
from torchgp.module import Module


class Mean(Module):
    """Base mean: subclasses implement ``forward(x)`` returning ``(*batch, n)``."""

    def __call__(self, x, *args, **kwargs):
        return super().__call__(as_inputs(x, "x"), *args, **kwargs)


class ZeroMean(Mean):
    """μ(x) = 0."""

    def __init__(self, batch_shape=torch.Size(), **kwargs):
        super().__init__()
        self.batch_shape = torch.Size(batch_shape)

    def forward(self, x):
        return torch.zeros(broadcast_shapes(x.shape[:-1], (*self.batch_shape, 1)), dtype=x.dtype, device=x.device)


class ConstantMean(Mean):
    """μ(x) = c, one learned constant per batch member (``state_dict`` key ``raw_constant``).

    Args:
        constant_prior: optional prior on c.
        constant_constraint: optional constraint on c (default none).
        batch_shape: batch of independent constants.
    """

    def __init__(self, constant_prior=None, constant_constraint=None, batch_shape=torch.Size(), **kwargs):
        super().__init__()
        self.batch_shape = torch.Size(batch_shape)
        self.register_parameter("raw_constant", torch.nn.Parameter(torch.zeros(self.batch_shape)))
        if constant_constraint is not None:
            self.register_constraint("raw_constant", constant_constraint)
        if constant_prior is not None:
            self.register_prior("mean_prior", constant_prior, "constant")

    @property
    def constant(self) -> torch.Tensor:
        c = self._modules.get("raw_constant_constraint")
        return self.raw_constant if c is None else c.transform(self.raw_constant)

    @constant.setter
    def constant(self, value):
        c = self._modules.get("raw_constant_constraint")
        value = torch.as_tensor(value, dtype=self.raw_constant.dtype)
        if c is not None:
            self._check_value("constant", value, c)
            value = c.inverse_transform(value)
        with torch.no_grad():
            self.raw_constant.copy_(value.expand_as(self.raw_constant))

    def forward(self, x):
        return self.constant.unsqueeze(-1).expand(broadcast_shapes(x.shape[:-1], (*self.batch_shape, 1)))


class LinearMean(Mean):
    """μ(x) = xᵀw + b.

    Args:
        input_size: d.
        batch_shape: batch of independent means.
        bias: whether to learn b.
    """

    def __init__(self, input_size: int, batch_shape=torch.Size(), bias: bool = True):
        super().__init__()
        self.batch_shape = torch.Size(batch_shape)
        self.weights = torch.nn.Parameter(torch.randn(*self.batch_shape, input_size, 1))
        self.bias = torch.nn.Parameter(torch.randn(*self.batch_shape, 1)) if bias else None

    def forward(self, x):
        res = (x @ self.weights).squeeze(-1)
        return res if self.bias is None else res + self.bias
