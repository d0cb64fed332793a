r"""Orthogonally decoupled variational GP (Salimbeni et al. 2018), in GPyTorch's formulation.

A covariance strategy (e.g. a whitened :class:`VariationalStrategy` over ``m_γ`` inducing points)
gives ``q_γ(f) = N(μ_γ(·), Σ_γ(·, ·))``. A second, usually larger, set of ``m_β`` mean inducing
points ``Z_β`` with a point mass ``a`` (a :class:`DeltaVariationalDistribution`) adds a mean basis:

.. math:: \mu_q(X) = \mu_\gamma(X) + \Sigma_\gamma(X, Z_\beta)\, a,\qquad \Sigma_q(X) = \Sigma_\gamma(X, X),
          \qquad \mathrm{KL} = \mathrm{KL}_\gamma + \tfrac12\, a^\top \Sigma_\gamma(Z_\beta, Z_\beta)\, a.

The basis ``Σ_γ(X, Z_β)`` is the covariance strategy's *posterior* covariance, which is orthogonal to
what the covariance inducing points already explain (Salimbeni et al. 2018, §3). With ``a = 0`` the
model is the coupled one. One step evaluates the covariance strategy once on ``[X; Z_β]``:
O(m_γ² (b + m_β) + (b + m_β)²).
"""

from __future__ import annotations

import torch

from torchgp._shapes import broadcast_shapes
from torchgp.distributions import MultivariateNormal
from torchgp.errors import ModelTypeError
from torchgp.variational.delta_variational_distribution import DeltaVariationalDistribution
from torchgp.variational.variational_strategy import _VariationalStrategy

__all__ = ["OrthogonallyDecoupledVariationalStrategy"]


class OrthogonallyDecoupledVariationalStrategy(_VariationalStrategy):
    r"""Decoupled mean (``Z_β``, point mass ``a``) and covariance (a wrapped strategy) inducing sets.

    Args:
        covar_variational_strategy: the strategy giving the covariance, e.g.
            ``VariationalStrategy(model, Z_γ, CholeskyVariationalDistribution(m_γ))``; it holds the model.
        inducing_points: mean inducing points ``Z_β`` ``(*batch, m_β, d)`` (learned).
        variational_distribution: a :class:`DeltaVariationalDistribution` over ``m_β`` values (``a``).
        jitter_val: jitter on ``Σ_γ(Z_β, Z_β)`` in :attr:`prior_distribution`
            (default ``settings.variational_cholesky_jitter``).

    Shapes:
        ``strategy(x (*batch, b, d))`` → ``MultivariateNormal`` ``(*batch, b)``.

    Example:
        >>> # covar = VariationalStrategy(self, Z_small, CholeskyVariationalDistribution(len(Z_small)))
        >>> # OrthogonallyDecoupledVariationalStrategy(covar, Z_big, DeltaVariationalDistribution(len(Z_big)))
    """

    def __init__(self, covar_variational_strategy, inducing_points, variational_distribution, jitter_val=None):
        if not isinstance(covar_variational_strategy, _VariationalStrategy):
            raise ModelTypeError(
                "covar_variational_strategy must be a torchgp variational strategy (e.g. VariationalStrategy); "
                f"got {type(covar_variational_strategy).__name__}."
            )
        if not isinstance(variational_distribution, DeltaVariationalDistribution):
            raise ModelTypeError(
                "OrthogonallyDecoupledVariationalStrategy needs a DeltaVariationalDistribution(m_β) for the mean "
                f"inducing values; got {type(variational_distribution).__name__}."
            )
        super().__init__(covar_variational_strategy, inducing_points, variational_distribution, True, jitter_val)
        self.base_variational_strategy = covar_variational_strategy  # a submodule: its parameters train too

    @property
    def prior_distribution(self) -> MultivariateNormal:
        """``N(μ_γ(Z_β), Σ_γ(Z_β, Z_β) + εI)`` ``(*batch, m_β)``: the covariance strategy at the mean points."""
        out = self.base_variational_strategy(self.inducing_points)
        S = out.covariance_matrix
        eye = torch.eye(S.shape[-1], dtype=S.dtype, device=S.device)
        return MultivariateNormal(out.mean, S + self._jitter(S.dtype) * eye)

    def __call__(self, x: torch.Tensor, prior: bool = False, **kwargs) -> MultivariateNormal:
        """``q(f(x))`` ``(*batch, b)`` (module docstring); the prior of the model if ``prior=True``."""
        if prior:
            return self.base_variational_strategy(x, prior=True, **kwargs)
        x = self._check_inputs(x)
        self._initialize()
        Z = self.inducing_points
        batch = broadcast_shapes(Z.shape[:-2], x.shape[:-2])
        b = x.shape[-2]
        full = torch.cat([x.expand(*batch, *x.shape[-2:]), Z.expand(*batch, *Z.shape[-2:])], -2)
        out = self.base_variational_strategy(full, **kwargs)
        mean, S = out.mean, out.covariance_matrix
        a = self._variational_distribution.variational_mean
        # μ_q(X) = μ_γ(X) + Σ_γ(X, Z_β) a
        q_mean = mean[..., :b] + (S[..., :b, b:] @ a.unsqueeze(-1)).squeeze(-1)
        return MultivariateNormal(q_mean, S[..., :b, :b])

    def kl_divergence(self) -> torch.Tensor:
        """``KL_γ + ½ aᵀ Σ_γ(Z_β, Z_β) a`` ``(*batch)``."""
        self._initialize()
        a = self._variational_distribution.variational_mean
        S = self.base_variational_strategy(self.inducing_points).covariance_matrix
        quad = (a.unsqueeze(-2) @ S @ a.unsqueeze(-1)).squeeze(-1).squeeze(-1)
        return self.base_variational_strategy.kl_divergence() + 0.5 * quad
