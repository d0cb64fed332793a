r"""The leave-one-out pseudo-likelihood of an exact GP (R&W 2006, §5.4.2), in closed form from :math:`K^{-1}`.

With :math:`K = K_{XX} + \sigma^2 I`, :math:`r = y - \mu(X)` and :math:`\alpha = K^{-1} r`, the
predictive of point :math:`i` from the other :math:`n - 1` points has (eq. 5.12)

.. math:: \sigma_i^2 = 1 / [K^{-1}]_{ii},\qquad \mu_i = y_i - \alpha_i / [K^{-1}]_{ii},

so each of the ``n`` refits costs nothing more than one :math:`K^{-1}`, and the objective is
(eq. 5.10–5.11, divided by ``n`` as GPyTorch does)

.. math:: \frac1n \Big[\sum_{i=1}^n -\tfrac12\log\sigma_i^2 - \frac{(y_i - \mu_i)^2}{2\sigma_i^2}
          + \sum \log p(\theta)\Big] - \tfrac12\log 2\pi .
"""

from __future__ import annotations

import math

import torch

from torchgp.distributions import MultivariateNormal
from torchgp.errors import ModelTypeError
from torchgp.linalg.cholesky import psd_safe_cholesky
from torchgp.mlls.exact_marginal_log_likelihood import ExactMarginalLogLikelihood
from torchgp.models._diagnostics import warn_eval_mode_objective
from torchgp.models.exact_gp import finite_or_explained
from torchgp.models.validation import check_train_targets


class LeaveOneOutPseudoLikelihood(ExactMarginalLogLikelihood):
    """LOO-CV objective for an :class:`~torchgp.models.ExactGP` (often more robust to model misspecification).

    Args:
        likelihood: a Gaussian likelihood.
        model: the ExactGP.

    Shapes:
        ``mll(output (*batch, n), target (*batch, n))`` → ``(*batch)``.
    """

    def forward(self, function_dist: MultivariateNormal, target: torch.Tensor, *params, **kwargs) -> torch.Tensor:
        if not isinstance(function_dist, MultivariateNormal):
            raise ModelTypeError(
                f"mll expects the model's MultivariateNormal output; got {type(function_dist).__name__}."
            )
        warn_eval_mode_objective(self, stacklevel=5)  # eval mode: the output is the posterior, not the prior
        train_x = self.model.train_inputs[0] if getattr(self.model, "train_inputs", None) else None
        if train_x is not None:
            target = check_train_targets(target, train_x, False, check_finite=False)
            params = params or tuple(self.model.train_inputs)
        output = self.likelihood(function_dist, *params, **kwargs)
        n = target.shape[-1]

        def loo():
            K = output.covariance_matrix
            L = psd_safe_cholesky(K)
            K_inv_diag = torch.cholesky_inverse(L).diagonal(dim1=-2, dim2=-1)  # [K⁻¹]_ii
            alpha = torch.cholesky_solve((target - output.mean).unsqueeze(-1), L).squeeze(-1)
            sigma2 = 1.0 / K_inv_diag  # eq. 5.12
            mu = target - alpha * sigma2  # eq. 5.12
            log_p = -0.5 * sigma2.log() - 0.5 * (target - mu).pow(2) / sigma2  # eq. 5.10 without -½ log 2π
            return (log_p.sum(-1) + self._other_terms(params)) / n - 0.5 * math.log(2 * math.pi)

        return finite_or_explained(self, loo, target)
