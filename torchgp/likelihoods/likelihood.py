r"""The ``Likelihood`` base: ``p(y | f)`` and what inference needs from it.

* ``likelihood(f_samples: Tensor)`` → ``forward(f)``: the conditional ``p(y | f)`` as a
  ``torch.distributions`` object, batched over f.
* ``likelihood(dist: MultivariateNormal)`` → ``marginal(dist)``: the predictive ``p(y*)``.
* ``expected_log_prob(y, q(f))`` = ``E_q[log p(y | f)]`` per data point (Gauss–Hermite
  quadrature by default; closed forms where they exist), used by the variational ELBO.

Subclasses write only ``forward(f)``; everything else has a default.
"""

from __future__ import annotations

import torch

from torchgp import settings
from torchgp.distributions import MultivariateNormal
from torchgp.likelihoods.quadrature import GaussHermiteQuadrature1D
from torchgp.module import Module


class _MixtureOverSamples(torch.distributions.Distribution):
    """The predictive ``p(y) = mean_s p(y | f_s)`` over Monte-Carlo samples ``f_s``."""

    arg_constraints = {}

    def __init__(self, conditional: torch.distributions.Distribution):
        self.conditional = conditional
        super().__init__(
            batch_shape=conditional.batch_shape[1:], event_shape=conditional.event_shape, validate_args=False
        )

    @property
    def mean(self):
        return self.conditional.mean.mean(0)

    @property
    def variance(self):
        # law of total variance over the samples
        return self.conditional.variance.mean(0) + self.conditional.mean.var(0, unbiased=False)

    @property
    def probs(self):
        return self.conditional.probs.mean(0)

    def log_prob(self, value):
        lp = self.conditional.log_prob(value)
        return torch.logsumexp(lp, 0) - torch.log(torch.tensor(lp.shape[0], dtype=lp.dtype))

    def sample(self, sample_shape=torch.Size()):
        # each f_s is itself a random draw, so the first one is a draw from the mixture
        return self.conditional.sample(sample_shape).select(len(sample_shape), 0)


class Likelihood(Module):
    """Base likelihood.

    Args:
        batch_shape: batch of independent likelihoods.
    """

    is_gaussian = False

    def __init__(self, batch_shape: torch.Size = torch.Size(), **kwargs):
        super().__init__()
        self.batch_shape = torch.Size(batch_shape)
        self.quadrature = GaussHermiteQuadrature1D()

    def forward(self, function_samples: torch.Tensor, *args, **kwargs) -> torch.distributions.Distribution:
        """``p(y | f)`` for function values ``f (*samples, *batch, n)``."""
        raise NotImplementedError

    def __call__(self, input, *args, **kwargs):
        if isinstance(input, MultivariateNormal):
            return self.marginal(input, *args, **kwargs)
        if isinstance(input, torch.Tensor):
            return self.forward(input, *args, **kwargs)
        raise TypeError(
            f"{type(self).__name__} takes a MultivariateNormal (predictive) or a tensor of function "
            f"values (conditional); got {type(input).__name__}."
        )

    def expected_log_prob(self, observations: torch.Tensor, function_dist: MultivariateNormal, *args, **kwargs):
        """``E_{q(f)}[log p(y | f)]`` per point, ``(*batch, n)``, by Gauss–Hermite quadrature."""
        return self.quadrature(lambda f: self.forward(f, *args, **kwargs).log_prob(observations), function_dist)

    def log_marginal(self, observations: torch.Tensor, function_dist: MultivariateNormal, *args, **kwargs):
        """``log ∫ p(y | f) q(f) df`` per point, ``(*batch, n)`` (used by PredictiveLogLikelihood)."""
        t, w = self.quadrature.locations_weights(function_dist.mean.dtype, function_dist.mean.device)
        mean, std = function_dist.mean, function_dist.stddev
        f = mean + (2.0**0.5) * std * t.view((-1,) + (1,) * mean.dim())
        lp = self.forward(f, *args, **kwargs).log_prob(observations)
        return torch.logsumexp(lp + w.log().view((-1,) + (1,) * (lp.dim() - 1)), 0)

    def marginal(self, function_dist: MultivariateNormal, *args, **kwargs):
        """Predictive ``p(y*)``: a mixture over ``settings.num_likelihood_samples`` draws of f."""
        num = settings.num_likelihood_samples.value()
        f = function_dist.to_data_independent_dist().rsample(torch.Size([num]))
        return _MixtureOverSamples(self.forward(f, *args, **kwargs))
