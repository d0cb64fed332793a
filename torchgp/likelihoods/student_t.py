r"""Student-t observation noise (robust regression): :math:`y \sim t_\nu(f, \sigma)`, ``σ² = noise``."""

from __future__ import annotations

import torch

from torchgp.constraints import GreaterThan
from torchgp.likelihoods.likelihood import _OneDimensionalLikelihood


class StudentTLikelihood(_OneDimensionalLikelihood):
    r"""``p(y | f) = StudentT(df = deg_free, loc = f, scale = √noise)`` (GPyTorch's parametrisation).

    Args:
        batch_shape: batch of independent likelihoods; parameters have shape ``(*batch, 1)``.
        deg_free_prior, noise_prior: optional priors.
        deg_free_constraint: default ``GreaterThan(2)`` (finite variance).
        noise_constraint: default ``GreaterThan(1e-4)``.

    Shapes:
        ``likelihood(f (*samples, *batch, n))`` → StudentT ``(*samples, *batch, n)``;
        ``likelihood(q(f) (*batch, n))`` → StudentT ``(S, *batch, n)`` at ``S = settings.num_likelihood_samples`` draws;
        ``expected_log_prob(y (*batch, n), q(f))`` → ``(*batch, n)`` by Gauss–Hermite quadrature.
    """

    def __init__(
        self,
        batch_shape=torch.Size([]),
        deg_free_prior=None,
        deg_free_constraint=None,
        noise_prior=None,
        noise_constraint=None,
    ):
        super().__init__(batch_shape=batch_shape)
        df_c = GreaterThan(2) if deg_free_constraint is None else deg_free_constraint
        noise_c = GreaterThan(1e-4) if noise_constraint is None else noise_constraint
        self.register_constrained("deg_free", df_c.transform(torch.zeros(*self.batch_shape, 1)), df_c, deg_free_prior)
        self.register_constrained("noise", noise_c.transform(torch.zeros(*self.batch_shape, 1)), noise_c, noise_prior)

    def forward(self, function_samples: torch.Tensor, *args, **kwargs) -> torch.distributions.StudentT:
        return torch.distributions.StudentT(self.deg_free, function_samples, self.noise.sqrt(), validate_args=False)
