r"""Robust variational objective with the γ-divergence (Knoblauch, Jewson & Damoulas 2019, GVI).

The expected log-likelihood is replaced by the expected γ-score (Fujisawa & Eguchi 2008):

.. math:: \ell_\gamma(y, f) = \frac{\gamma}{\gamma-1}\,
          \frac{p(y\mid f)^{\gamma-1}}{\big(\int p(y'\mid f)^{\gamma}\,dy'\big)^{(\gamma-1)/\gamma}},

which bounds the influence of outliers (γ → 1 recovers the log-likelihood up to an affine map).
For a Gaussian likelihood ``N(y; f, σ²)`` and ``q(f) = N(μ, v)``, with ``s = γ - 1``:

.. math:: \int N(y';f,\sigma^2)^\gamma dy' = (2\pi\sigma^2)^{-s/2}\gamma^{-1/2},\qquad
          \mathbb E_q[N(y;f,\sigma^2)^{s}] = (2\pi\sigma^2)^{-s/2}\,(1 + s v/\sigma^2)^{-1/2}
          \exp\!\Big(-\frac{s (y-\mu)^2}{2(\sigma^2 + s v)}\Big).

Note: GPyTorch 1.15 multiplies by the normalising integral's power instead of dividing by it;
torchgp follows the γ-score as published, so values (not the minimiser's robustness) differ.
"""

from __future__ import annotations

import math

import torch

from torchgp.errors import InputError, ModelTypeError
from torchgp.likelihoods.gaussian import _GaussianLikelihoodBase
from torchgp.mlls._approximate_mll import _ApproximateMarginalLogLikelihood


class GammaRobustVariationalELBO(_ApproximateMarginalLogLikelihood):
    """γ-robust ELBO for a Gaussian likelihood (GPyTorch's interface).

    Args:
        likelihood: a Gaussian likelihood.
        model: the ApproximateGP.
        gamma: γ > 1 (default 1.03); larger is more robust to outliers.
        num_data, beta, combine_terms: as in :class:`~torchgp.mlls.VariationalELBO`.

    Shapes:
        ``mll(model(x) (*batch, b), y (*batch, b))`` → ``(*batch)``.
    """

    def __init__(self, likelihood, model, gamma: float = 1.03, *args, **kwargs):
        if not isinstance(likelihood, _GaussianLikelihoodBase):
            raise ModelTypeError(
                f"GammaRobustVariationalELBO needs a Gaussian likelihood; got {type(likelihood).__name__}."
            )
        if not gamma > 1:
            raise InputError(f"gamma must be > 1 (γ = 1 is the ordinary ELBO: use VariationalELBO); got {gamma!r}.")
        super().__init__(likelihood, model, *args, **kwargs)
        self.gamma = float(gamma)

    def _log_likelihood_term(self, approximate_dist_f, target, **kwargs):
        g, s = self.gamma, self.gamma - 1.0
        mu, v = approximate_dist_f.mean, approximate_dist_f.variance
        noise = self.likelihood._noise(mu, **kwargs)
        log_2pi_noise = torch.log(2 * math.pi * noise)
        log_expect = (
            -0.5 * s * log_2pi_noise
            - 0.5 * torch.log1p(s * v / noise)
            - 0.5 * s * (target - mu).pow(2) / (noise + s * v)
        )
        log_norm = -0.5 * s * log_2pi_noise - 0.5 * math.log(g)
        return (g / s) * torch.exp(log_expect - (s / g) * log_norm).sum(-1)
