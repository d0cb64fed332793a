r"""Negative-binomial counts: over-dispersed Poisson regression with a learned success probability.

.. math:: y \mid f \sim \mathrm{NB}(k, p),\qquad
          p(y \mid f) = \frac{\Gamma(y + k)}{y!\,\Gamma(k)}\, p^{y} (1-p)^{k}

(``torch.distributions.NegativeBinomial(total_count=k, probs=p)``: successes before ``k``
failures), with the mean link :math:`k = \operatorname{softplus}(f)\,(1-p)/p`, so that
:math:`\mathbb E[y \mid f] = k p / (1 - p) = \operatorname{softplus}(f)` and
:math:`\operatorname{Var}[y \mid f] = \operatorname{softplus}(f) / (1 - p)`: ``p`` sets the
over-dispersion. With ``num_failures_param=True`` the GP sets :math:`k = \operatorname{softplus}(f)`
directly. ``expected_log_prob`` is by Gauss–Hermite quadrature (no closed form).
"""

from __future__ import annotations

import torch

from torchgp.constraints import Interval
from torchgp.likelihoods.likelihood import _OneDimensionalLikelihood

_P_MIN = 1e-6  # keeps k = softplus(f)(1-p)/p finite and positive at the ends of (0, 1)


class NegativeBinomialLikelihood(_OneDimensionalLikelihood):
    r"""``p(y | f) = NegativeBinomial(k(f), p)`` with a learned probability ``probs`` (GPyTorch's parameterisation).

    Args:
        batch_shape: batch of independent ``probs``.
        probs_prior: optional prior on ``p``.
        probs_constraint: constraint on ``p`` (default ``Interval(0, 1)``; initial value 0.5).
        num_failures_param: the GP gives the number of failures ``k = softplus(f)`` instead of the mean.

    Shapes:
        ``likelihood(f (*samples, *batch, n))`` → NegativeBinomial ``(*samples, *batch, n)``;
        ``expected_log_prob(y (*batch, n), q(f))`` → ``(*batch, n)``.

    Example:
        >>> import torch, torchgp
        >>> lik = torchgp.likelihoods.NegativeBinomialLikelihood()
        >>> round(lik(torch.tensor([0.0])).mean.item(), 6)  # softplus(0) = log 2
        0.693147
    """

    def __init__(
        self,
        batch_shape: torch.Size = torch.Size(),
        probs_prior=None,
        probs_constraint=None,
        num_failures_param: bool = False,
    ):
        super().__init__(batch_shape=batch_shape)
        constraint = Interval(0.0, 1.0) if probs_constraint is None else probs_constraint
        self.register_constrained("probs", torch.full((*self.batch_shape, 1), 0.5), constraint, probs_prior)
        self.num_failures_param = num_failures_param

    def forward(self, function_samples: torch.Tensor, *args, **kwargs) -> torch.distributions.NegativeBinomial:
        p = self.probs.clamp(_P_MIN, 1 - _P_MIN)
        rate = torch.nn.functional.softplus(function_samples)
        k = rate if self.num_failures_param else rate * (1 - p) / p  # mean link: E[y] = k p / (1 - p) = softplus(f)
        return torch.distributions.NegativeBinomial(total_count=k, probs=p, validate_args=False)
