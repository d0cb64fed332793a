r"""``MultitaskMean``: one mean function per task, ``μ(x) = [μ_1(x), …, μ_t(x)]``."""

from __future__ import annotations

import copy

import torch

from torchgp._shapes import broadcast_shapes
from torchgp.errors import InputError
from torchgp.means.means import Mean

__all__ = ["MultitaskMean"]


class MultitaskMean(Mean):
    """Stacks ``t`` single-output means into a ``(*batch, n, t)`` mean.

    Args:
        base_means: a list of ``t`` means, or one mean (or a one-element list) copied ``num_tasks`` times
            (each copy with its own parameters).
        num_tasks: t.

    Shapes:
        ``x (*batch, n, d)`` → ``(*batch, n, t)``.

    Example:
        >>> import torch, torchgp
        >>> m = torchgp.means.MultitaskMean(torchgp.means.ConstantMean(), num_tasks=3)
        >>> tuple(m(torch.zeros(4, 2)).shape)
        (4, 3)
    """

    def __init__(self, base_means, num_tasks: int):
        super().__init__()
        if isinstance(base_means, Mean):
            base_means = [base_means]
        base_means = list(base_means)
        if not all(isinstance(m, Mean) for m in base_means):
            raise InputError("MultitaskMean: base_means must be torchgp Mean modules (or one Mean).")
        if len(base_means) == 1:
            base_means = [base_means[0]] + [copy.deepcopy(base_means[0]) for _ in range(num_tasks - 1)]
        elif len(base_means) != num_tasks:
            raise InputError(
                f"MultitaskMean: got {len(base_means)} base means for num_tasks={num_tasks}; pass one mean per task "
                "or a single mean to copy."
            )
        self.base_means = torch.nn.ModuleList(base_means)
        self.num_tasks = num_tasks

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [m(x) for m in self.base_means]
        shape = broadcast_shapes(*(o.shape for o in outs))
        return torch.stack([o.expand(shape) for o in outs], -1)
