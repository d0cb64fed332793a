r"""A Gaussian likelihood for targets with missing (NaN) entries.

Missing observations contribute nothing: per point,

.. math:: \ell_i = [y_i \text{ observed}]\;\mathbb E_q[\log N(y_i; f_i, \sigma^2)]

and likewise for ``log_marginal``. With an :class:`~torchgp.models.ExactGP`, the exact MLL and the
posterior leave the missing points out exactly, as under ``settings.observation_nan_policy('mask')``
(the model itself must be built under that policy to accept NaN targets).
"""

from __future__ import annotations

import torch

from torchgp.likelihoods.gaussian import GaussianLikelihood


class GaussianLikelihoodWithMissingObs(GaussianLikelihood):
    r"""Homoskedastic Gaussian noise; NaN targets are missing observations (GPyTorch's name).

    Args:
        noise_prior, noise_constraint, batch_shape: as in :class:`GaussianLikelihood`.

    Shapes:
        ``expected_log_prob(y (*batch, n), q(f))`` and ``log_marginal(y, q(f))`` → ``(*batch, n)``, 0 where
        ``y`` is NaN.
    """

    MISSING_VALUE_FILL: float = -999.0
    _masks_missing = True  # read by the exact MLL and posterior

    def _get_masked_obs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(missing (*batch, n) bool, x with NaN replaced by MISSING_VALUE_FILL)``."""
        missing = torch.isnan(x)
        return missing, x.masked_fill(missing, self.MISSING_VALUE_FILL)

    def expected_log_prob(self, target, input, *params, **kwargs) -> torch.Tensor:
        missing, filled = self._get_masked_obs(target)
        res = super().expected_log_prob(filled, input, *params, **kwargs)
        return torch.where(missing, torch.zeros_like(res), res)  # where, not *: no 0·inf at filled points

    def log_marginal(self, observations, function_dist, *params, **kwargs) -> torch.Tensor:
        missing, filled = self._get_masked_obs(observations)
        res = super().log_marginal(filled, function_dist, *params, **kwargs)
        return torch.where(missing, torch.zeros_like(res), res)
