r"""Batch-decoupled whitened strategy (PPGPR's decoupled family; Jankowiak et al. 2020, Cheng & Boots 2017).

Two sets of ``m`` inducing points, ``Z_μ`` for the mean and ``Z_σ`` for the covariance, are stacked
along one batch dimension of size 2 (``mean_var_batch_dim``, default the last batch dimension), so
both are computed in one batched pass; the kernel may also carry separate hyperparameters along that
dimension (batch size 2) or share them (size 1). With ``K_μ = L_μ L_μᵀ``, ``A_μ = L_μ⁻¹ K_{Z_μ X}``
and likewise for ``σ``, and one whitened ``q(v) = N(m, S)``:

.. math:: \mu_q(X) = \mu_\mu(X) + A_\mu^\top m,\qquad
          \Sigma_q(X) = K^\sigma_{XX} + \varepsilon I + A_\sigma^\top (S - I) A_\sigma.

The KL term is GPyTorch's: ``-log N(m; 0, I) + KL(N(0, S) ‖ N(0, I))`` (the mean treated as a point
mass; it exceeds the Gaussian KL by the constant ``(m/2) log 2π``).
"""

from __future__ import annotations

import math

import torch

from torchgp.distributions import MultivariateNormal
from torchgp.errors import InputError, ModelTypeError, ShapeError
from torchgp.variational.variational_strategy import (
    VariationalStrategy,
    _add_jitter,
    _PredictiveCovariance,
)

__all__ = ["BatchDecoupledVariationalStrategy"]


class BatchDecoupledVariationalStrategy(VariationalStrategy):
    r"""Separate mean and covariance inducing points (and optionally hyperparameters), batched.

    Args:
        model: the :class:`~torchgp.models.ApproximateGP`; its mean/kernel batch shape is ``(*batch, 2)``
            (separate mean/variance hyperparameters) or ``(*batch, 1)`` (shared), with the 2 or 1 at
            ``mean_var_batch_dim``.
        inducing_points: ``Z`` ``(*batch, m, d)``, the initial value of both sets.
        variational_distribution: a Gaussian (not delta) distribution over ``m`` whitened values, batch ``batch``.
        learn_inducing_locations: train both sets of inducing points (default) or keep them fixed.
        mean_var_batch_dim: negative batch dimension holding the mean/variance pair (default ``-1``).
        jitter_val: jitter on ``K_ZZ`` and ``K_XX`` (default ``settings.variational_cholesky_jitter``).

    Shapes:
        ``strategy(x (*batch, b, d))`` → ``MultivariateNormal`` ``(*batch, b)``; the stored
        ``inducing_points`` have the pair dimension inserted: ``(*batch, 2, m, d)`` by default.
    """

    def __init__(
        self,
        model,
        inducing_points,
        variational_distribution,
        learn_inducing_locations=True,
        mean_var_batch_dim=None,
        jitter_val=None,
    ):
        if getattr(variational_distribution, "is_delta", False):
            raise ModelTypeError(
                "BatchDecoupledVariationalStrategy needs a Gaussian variational distribution (e.g. "
                "MeanFieldVariationalDistribution(m)); a DeltaVariationalDistribution has no covariance."
            )
        if mean_var_batch_dim is not None and mean_var_batch_dim >= 0:
            raise InputError(
                f"mean_var_batch_dim must be a negative batch dimension (e.g. -1); got {mean_var_batch_dim}."
            )
        self.mean_var_batch_dim = mean_var_batch_dim
        Z = torch.as_tensor(inducing_points)
        if Z.dim() == 1:
            Z = Z.unsqueeze(-1)
        need = 1 - self._pair_dim  # the batch dimensions the pair dimension is counted among, plus (m, d)
        if Z.dim() < need:
            raise ShapeError(
                f"mean_var_batch_dim = {mean_var_batch_dim} needs inducing_points with at least {need} dimensions "
                f"(*batch, m, d); got {tuple(Z.shape)}."
            )
        Z = torch.stack([Z, Z], dim=self._pair_dim - 2)
        super().__init__(model, Z, variational_distribution, learn_inducing_locations, jitter_val)

    @property
    def _pair_dim(self) -> int:
        """The pair's dimension counted on a ``(*batch, n)`` tensor."""
        return -1 if self.mean_var_batch_dim is None else self.mean_var_batch_dim

    def _check_inputs(self, x):
        # the inducing points' batch has the pair dimension; the inputs get a singleton there
        x = x.unsqueeze(-1) if x.dim() == 1 else x
        if x.dim() < 1 - self._pair_dim:
            raise ShapeError(
                f"mean_var_batch_dim = {self.mean_var_batch_dim} needs inputs with at least {1 - self._pair_dim} "
                f"dimensions (*batch, b, d); got {tuple(x.shape)}."
            )
        return super()._check_inputs(x.unsqueeze(self._pair_dim - 2))

    def __call__(self, x: torch.Tensor, prior: bool = False, **kwargs) -> MultivariateNormal:
        """``q(f(x))`` ``(*batch, b)`` for ``x (*batch, b, d)`` (module docstring)."""
        if prior:
            return self.model.forward(x, **kwargs)
        x = self._check_inputs(x)
        self._initialize()
        mean_z, mean_x, K_zz, K_zx, kxx_diag, kxx_dense = self._joint_prior(x, **kwargs)
        eps = self._jitter(K_zz.dtype)
        L = self._chol_zz(K_zz)
        A = torch.linalg.solve_triangular(L, K_zx, upper=False)  # L⁻¹ K_ZX (*batch', m, b), pair at pd - 2
        pd = self._pair_dim
        A_mu, A_sig = A.select(pd - 2, 0), A.select(pd - 2, 1)
        q_mean, q_chol = self._variational_distribution.mean_and_scale_tril()
        # μ_q(X) = μ_μ(X) + A_μᵀ m
        mean = mean_x.select(pd - 1, 0) + (A_mu.mT @ q_mean.unsqueeze(-1)).squeeze(-1)
        # Σ_q(X) = K^σ_XX + εI - A_σᵀA_σ + (L_vᵀA_σ)ᵀ(L_vᵀA_σ)
        var_diag = kxx_diag.expand(*A.shape[:-2], A.shape[-1]).select(pd - 1, 1) + eps

        def var_dense():
            return kxx_dense().expand(*A.shape[:-2], A.shape[-1], A.shape[-1]).select(pd - 2, 1)

        B = q_chol.mT @ A_sig
        return MultivariateNormal(mean, _PredictiveCovariance(var_diag, _add_jitter(var_dense, eps), A_sig, B))

    def kl_divergence(self) -> torch.Tensor:
        """``½ mᵀm + (m/2) log 2π + ½(tr S - m - log|S|)`` ``(*batch)``."""
        kl = super().kl_divergence()  # ½[tr S + mᵀm - m - log|S|]
        return kl + 0.5 * self._variational_distribution.num_inducing_points * math.log(2 * math.pi)
