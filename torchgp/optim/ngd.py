r"""Natural-gradient descent for Natural*VariationalDistribution parameters (Salimbeni et al. 2018).

After ``loss.backward()`` with ``loss = -mll(...)`` (the bound divided by ``N``), the ``.grad`` of
a natural parameter holds ``∂loss/∂η`` — the natural gradient (see
:mod:`torchgp.variational.natural_variational_distribution`). The step undoes the ``1/N``:

.. math:: \theta \leftarrow \theta - \text{lr}\cdot N\cdot\tilde\nabla_\theta\,\text{loss}

so with a Gaussian likelihood, full-batch data and ``lr = 1`` one step reaches the optimal ``q(u)``.
"""

from __future__ import annotations

import torch

from torchgp.errors import InputError


class NGD(torch.optim.Optimizer):
    """Natural-gradient step on variational parameters (GPyTorch's interface).

    Args:
        params: the natural parameters, e.g. ``model.variational_parameters()``.
        num_data: ``N``, the number of training points (the objective is divided by it).
        lr: step size; 1 is exact for conjugate models, ~0.1 is typical for non-conjugate ones.

    Example:
        ``ngd = torchgp.optim.NGD(model.variational_parameters(), num_data=y.size(0), lr=0.1)``
    """

    def __init__(self, params, num_data: int, lr: float = 0.1):
        if not lr > 0:
            raise InputError(f"NGD: lr must be positive; got {lr!r}.")
        if int(num_data) < 1:
            raise InputError(f"NGD: num_data must be the number of training points (≥ 1); got {num_data!r}.")
        self.num_data = int(num_data)
        super().__init__(params, dict(lr=lr))

    @torch.no_grad()
    def step(self, closure=None):
        """One step ``θ ← θ - lr · N · grad``; ``closure`` (re-evaluating the loss) is optional."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.add_(p.grad, alpha=-group["lr"] * self.num_data)
        return loss
