r"""The exact marginal log-likelihood, divided by n (GPyTorch's normalisation).

.. math::
    \frac1n\Big[-\tfrac12 (y-\mu)^\top (K+\sigma^2 I)^{-1}(y-\mu) - \tfrac12\log|K+\sigma^2I| - \tfrac n2\log 2\pi
    + \sum_{\text{priors}} \log p(\theta)\Big]

(R&W 2006, eq. 2.30.) Its gradient (eq. 5.9) comes from autograd over the analytic backward of
:func:`torchgp.linalg.inv_quad_logdet`.
"""

from __future__ import annotations

import torch

from torchgp.distributions import MultivariateNormal
from torchgp.errors import ModelTypeError
from torchgp.likelihoods.gaussian import _GaussianLikelihoodBase
from torchgp.mlls.marginal_log_likelihood import MarginalLogLikelihood
from torchgp.models.exact_gp import finite_or_explained
from torchgp.models.validation import check_train_targets


class ExactMarginalLogLikelihood(MarginalLogLikelihood):
    """Objective for :class:`~torchgp.models.ExactGP`.

    Args:
        likelihood: a Gaussian likelihood.
        model: the ExactGP.

    Shapes:
        ``mll(output (*batch, n), target (*batch, n) or (*batch, n, 1))`` → ``(*batch)``.

    Example:
        ``loss = -mll(model(train_x), train_y); loss.backward()``
    """

    def __init__(self, likelihood, model):
        if not isinstance(likelihood, _GaussianLikelihoodBase):
            raise ModelTypeError(
                f"ExactMarginalLogLikelihood needs a Gaussian likelihood; got {type(likelihood).__name__}. "
                "Use VariationalELBO with an ApproximateGP for other likelihoods."
            )
        super().__init__(likelihood, model)

    def forward(self, function_dist: MultivariateNormal, target: torch.Tensor, *params, **kwargs) -> torch.Tensor:
        if not isinstance(function_dist, MultivariateNormal):
            raise ModelTypeError(
                f"mll expects the model's MultivariateNormal output; got {type(function_dist).__name__}."
            )
        train_x = self.model.train_inputs[0] if getattr(self.model, "train_inputs", None) else None
        if train_x is not None:
            target = check_train_targets(
                target, train_x, getattr(self.model, "_multi_output", False), check_finite=False
            )
            params = params or tuple(self.model.train_inputs)
        output = self.likelihood(function_dist, *params, **kwargs)
        n = function_dist.event_shape.numel()
        return finite_or_explained(self, lambda: (output.log_prob(target) + self._log_prior()) / n, target)
