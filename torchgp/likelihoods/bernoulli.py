r"""Probit classification: :math:`p(y = 1 \mid f) = \Phi(f)` (R&W 2006, §3.3 and eq. 3.82).

Labels may be ``{0, 1}`` (GPyTorch's convention) or ``{-1, 1}``; with ``s = 2·1[y > 0] - 1``,
``log p(y | f) = log Φ(s f)`` (computed with ``log_ndtr``, stable in the tails). Under
``q(f) = N(μ, σ²)`` the predictive is in closed form:

.. math:: p(y = 1) = \int \Phi(f) N(f; \mu, \sigma^2) df = \Phi\big(\mu / \sqrt{1 + \sigma^2}\big).
"""

from __future__ import annotations

import torch
from torch.special import log_ndtr, ndtr

from torchgp import settings
from torchgp.distributions import MultivariateNormal
from torchgp.errors import InputError
from torchgp.likelihoods.likelihood import _OneDimensionalLikelihood


def _signs(y: torch.Tensor) -> torch.Tensor:
    """Labels in {0, 1} or {-1, 1} → signs in {-1, 1}; clear error otherwise."""
    if settings.debug.on():
        ok01 = torch.all((y == 0) | (y == 1))
        okpm = torch.all((y == -1) | (y == 1))
        if not (ok01 or okpm):
            bad = torch.unique(y.detach())[:5].tolist()
            raise InputError(
                f"BernoulliLikelihood needs labels in {{0, 1}} (or {{-1, 1}}); got values such as {bad}. "
                "Map the classes to 0/1 (e.g. y = (y == positive_class).float()); for more than two classes "
                "use SoftmaxLikelihood."
            )
    return torch.where(y > 0, 1.0, -1.0).to(y.dtype if y.is_floating_point() else torch.get_default_dtype())


class _ProbitBernoulli(torch.distributions.Bernoulli):
    """``Bernoulli(Φ(f))`` whose ``log_prob`` takes {0,1} or {-1,1} labels and is stable in the tails."""

    def __init__(self, f: torch.Tensor):
        super().__init__(probs=ndtr(f), validate_args=False)
        self._f = f

    def log_prob(self, value):
        return log_ndtr(_signs(value).to(self._f.dtype) * self._f)


class BernoulliLikelihood(_OneDimensionalLikelihood):
    r"""Binary classification with the probit link.

    Shapes:
        ``likelihood(f (*samples, *batch, n))`` → Bernoulli ``(*samples, *batch, n)``;
        ``likelihood(q(f) (*batch, n))`` → Bernoulli ``(*batch, n)`` with ``probs = Φ(μ/√(1+σ²))``;
        ``expected_log_prob(y (*batch, n), q(f))`` → ``(*batch, n)``.

    Raises:
        InputError: labels outside {0, 1} and {-1, 1}.

    Example:
        >>> import torch, torchgp
        >>> lik = torchgp.likelihoods.BernoulliLikelihood()
        >>> q = torchgp.distributions.MultivariateNormal(torch.zeros(2), torch.eye(2))
        >>> lik(q).probs
        tensor([0.5000, 0.5000])
    """

    def forward(self, function_samples: torch.Tensor, *args, **kwargs):
        return _ProbitBernoulli(function_samples)

    def marginal(self, function_dist: MultivariateNormal, *args, **kwargs) -> torch.distributions.Bernoulli:
        mean, var = function_dist.mean, function_dist.variance
        return torch.distributions.Bernoulli(probs=ndtr(mean / torch.sqrt(1 + var)), validate_args=False)

    def expected_log_prob(self, observations, function_dist, *args, **kwargs):
        s = _signs(observations).to(function_dist.mean.dtype)
        return self.quadrature(lambda f: log_ndtr(s * f), function_dist)

    def log_marginal(self, observations, function_dist, *args, **kwargs):
        s = _signs(observations).to(function_dist.mean.dtype)
        mean, var = function_dist.mean, function_dist.variance
        return log_ndtr(s * mean / torch.sqrt(1 + var))
