r"""Objective for :class:`~torchgp.models.SGPR`: Titsias' (2009) collapsed bound divided by ``n``.

.. math:: \frac1n\Big[\log N(y; \mu, Q_{xx} + \sigma^2 I) - \frac{1}{2\sigma^2}\operatorname{tr}(K_{xx} - Q_{xx})
          + \sum_{\text{priors}}\log p(\theta)\Big]
"""

from __future__ import annotations

import torch

from torchgp.errors import ModelTypeError, NonFiniteError, ShapeError
from torchgp.mlls.marginal_log_likelihood import MarginalLogLikelihood


class SGPRMarginalLogLikelihood(MarginalLogLikelihood):
    """``mll(model(train_x), train_y)`` → bound / n ``(*batch)`` for an SGPR model in train mode.

    Args:
        likelihood: the SGPR's Gaussian likelihood.
        model: the :class:`~torchgp.models.SGPR`.
    """

    def __init__(self, likelihood, model):
        if not hasattr(model, "collapsed_bound"):
            raise ModelTypeError(f"SGPRMarginalLogLikelihood needs a torchgp.models.SGPR; got {type(model).__name__}.")
        super().__init__(likelihood, model)

    def forward(self, output, target: torch.Tensor, **kwargs) -> torch.Tensor:
        n = output.event_shape[0]
        if target.shape[-1] != n:
            raise ShapeError(f"target has shape {tuple(target.shape)}; expected (*batch, {n}) to match model(train_x).")
        res = (self.model.collapsed_bound(output, target) + self._log_prior()) / n
        if not torch.all(torch.isfinite(res)):
            raise NonFiniteError(
                f"The SGPR bound is not finite; non-finite parameters: {self.model.non_finite_parameters()}."
            )
        return res
