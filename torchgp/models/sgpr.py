r"""``SGPR``: sparse GP regression with Titsias' (2009) collapsed bound, for medium ``n`` and a Gaussian likelihood.

With ``m`` inducing points ``Z``, ``K_zz = L Lᵀ``, ``A = L⁻¹ K_zx`` ``(m × n)``, ``Q = AᵀA`` (the
Nyström approximation of ``K_xx``) and noise ``D = diag σ²``, the optimal ``q(u)`` is integrated
out analytically, leaving (Titsias 2009, eq. 9)

.. math:: \mathcal F = \log N(y;\ \mu,\ Q + D) - \tfrac12 \operatorname{tr}\big(D^{-1}(K_{xx} - Q)\big),

computed in O(n m²) by Woodbury with ``B = I + A D⁻¹ Aᵀ = L_B L_Bᵀ`` and ``c = L_B⁻¹ A D⁻¹ (y - μ)``:
``(y-μ)ᵀ(Q+D)⁻¹(y-μ) = (y-μ)ᵀD⁻¹(y-μ) - cᵀc`` and ``log|Q + D| = log|D| + 2 Σ log diag L_B``.
The predictive at ``X*`` (``A* = L⁻¹ K_z*``) is

.. math:: \mu_* = \mu(X_*) + A_*^\top L_B^{-\top} c,\qquad
          \Sigma_* = K_{**} - A_*^\top A_* + (L_B^{-1} A_*)^\top (L_B^{-1} A_*).

With ``Z = X`` the bound equals the exact marginal likelihood and the predictive the exact posterior.
"""

from __future__ import annotations

import torch
from torch import nn

from torchgp import settings
from torchgp._shapes import broadcast_shapes
from torchgp._state import state_key
from torchgp.distributions import MultivariateNormal
from torchgp.distributions._inducing import _PredictiveCovariance, _split_prior
from torchgp.errors import InputError, ModelTypeError, ShapeError
from torchgp.likelihoods.gaussian import _GaussianLikelihoodBase
from torchgp.linalg.cholesky import psd_safe_cholesky
from torchgp.linalg.operators import Operator
from torchgp.models.gp import GP, call_with_hooks


class NystromCovariance(Operator):
    """``Q = AᵀA`` ``(*batch, n, n)`` with ``A = L⁻¹ K_zx`` ``(*batch, m, n)``; also holds ``diag K_xx``."""

    def __init__(self, A: torch.Tensor, kxx_diag: torch.Tensor):
        self.A, self.kxx_diag = A, kxx_diag
        n = A.shape[-1]
        self.shape = torch.Size([*broadcast_shapes(A.shape[:-2], kxx_diag.shape[:-1]), n, n])
        self.dtype, self.device = A.dtype, A.device

    def _dense(self):
        return (self.A.mT @ self.A).expand(self.shape)

    def diagonal(self):
        return self.A.pow(2).sum(-2).expand(self.shape[:-1])


class SGPR(GP):
    """Sparse GP regression (Titsias 2009); train it with :class:`~torchgp.mlls.SGPRMarginalLogLikelihood`.

    Subclass it and write ``forward(x)`` returning the prior ``MultivariateNormal(mean(x), kernel(x))``,
    exactly as for an ExactGP.

    Args:
        train_inputs: ``X`` ``(*batch, n, d)`` (or ``(n,)``).
        train_targets: ``y`` ``(*batch, n)``.
        likelihood: a Gaussian likelihood.
        inducing_points: ``Z`` ``(*batch, m, d)``.
        learn_inducing_locations: train ``Z`` (default) or keep it fixed.

    Shapes:
        train mode ``model(X)`` → ``MultivariateNormal(μ(X), Q_xx)`` ``(*batch, n)`` (what the bound needs);
        eval mode ``model(X*)`` with ``X* (*batch, t, d)`` → the predictive ``(*batch, t)``.
    """

    def __init__(self, train_inputs, train_targets, likelihood, inducing_points, learn_inducing_locations=True):
        super().__init__()
        if not isinstance(likelihood, _GaussianLikelihoodBase):
            raise ModelTypeError(
                f"SGPR needs a Gaussian likelihood; got {type(likelihood).__name__}. For other likelihoods use an "
                "ApproximateGP with VariationalELBO."
            )
        X = train_inputs[0] if isinstance(train_inputs, (tuple, list)) else train_inputs
        X = X.unsqueeze(-1) if X.dim() == 1 else X
        Z = torch.as_tensor(inducing_points)
        Z = Z.unsqueeze(-1) if Z.dim() == 1 else Z
        if Z.shape[-1] != X.shape[-1]:
            raise ShapeError(
                f"inducing_points have d = {Z.shape[-1]} (shape {tuple(Z.shape)}) but train_inputs have d = "
                f"{X.shape[-1]}; build them with shape (m, {X.shape[-1]}), e.g. train_x[:m].clone()."
            )
        if train_targets.shape[-1] != X.shape[-2]:
            raise ShapeError(
                f"train_targets must have shape (*batch, n) with n = {X.shape[-2]}; got {tuple(train_targets.shape)}."
            )
        self.likelihood = likelihood
        self.train_inputs = (X,)
        self.train_targets = train_targets
        if learn_inducing_locations:
            self.register_parameter("inducing_points", nn.Parameter(Z.detach().clone()))
        else:
            self.register_buffer("inducing_points", Z.detach().clone())
        self._cache = None  # (StateKey, L, L_B, c): the eval-mode factorisation of the training data

    def __getstate__(self):
        # The cache is derived state (and may hold non-leaf tensors, which cannot be deep-copied).
        state = super().__getstate__()
        state["_cache"] = None
        return state

    def _apply(self, fn, *args, **kwargs):
        self.train_inputs = tuple(fn(x) for x in self.train_inputs)
        self.train_targets = fn(self.train_targets)
        return super()._apply(fn, *args, **kwargs)

    def set_train_data(self, inputs=None, targets=None, strict: bool = True) -> None:
        """Replace the training data: ``inputs (*batch, n, d)``, ``targets (*batch, n)``."""
        if inputs is not None:
            inputs = inputs[0] if isinstance(inputs, (tuple, list)) else inputs
            self.train_inputs = (inputs.unsqueeze(-1) if inputs.dim() == 1 else inputs,)
        if targets is not None:
            self.train_targets = targets
        if self.train_targets.shape[-1] != self.train_inputs[0].shape[-2]:
            raise InputError("set_train_data: inputs and targets have different n; pass both.")

    def forward(self, x: torch.Tensor) -> MultivariateNormal:
        """The prior ``MultivariateNormal(mean(x), K(x))`` ``(*batch, n)`` for ``x (*batch, n, d)``."""
        raise NotImplementedError(f"{type(self).__name__} must implement forward(x) returning the prior MVN.")

    def _prior_blocks(self, x):
        """``μ_z, μ_x, K_zz, K_zx, diag K_xx`` and a closure for dense ``K_xx`` from the prior at ``[Z; x]``."""
        Z = self.inducing_points
        if x.shape[-1] != Z.shape[-1]:
            raise ShapeError(f"Inputs have d = {x.shape[-1]} but the inducing points have d = {Z.shape[-1]}.")
        batch = broadcast_shapes(Z.shape[:-2], x.shape[:-2])
        full = torch.cat([Z.expand(*batch, *Z.shape[-2:]), x.expand(*batch, *x.shape[-2:])], -2)
        prior = self.forward(full)
        if not isinstance(prior, MultivariateNormal):
            raise ModelTypeError(f"{type(self).__name__}.forward must return a torchgp MultivariateNormal.")
        return _split_prior(prior, Z.shape[-2])

    @staticmethod
    def _chol_zz(K_zz):
        eye = torch.eye(K_zz.shape[-1], dtype=K_zz.dtype, device=K_zz.device)
        return psd_safe_cholesky(K_zz + settings.variational_cholesky_jitter.value(K_zz.dtype) * eye)

    def _blocks(self, x):
        """``μ_x``, ``A = L⁻¹ K_zx`` ``(*batch, m, b)``, ``diag K_xx`` and a closure for dense ``K_xx``."""
        _, mean_x, K_zz, K_zx, kxx_diag, kxx_dense = self._prior_blocks(x)
        L = self._chol_zz(K_zz)
        A = torch.linalg.solve_triangular(L, K_zx, upper=False)
        return mean_x, A, kxx_diag, kxx_dense

    def _woodbury(self, A, noise, resid):
        """``L_B`` and ``c`` of the module docstring."""
        A_scaled = A / noise.sqrt().unsqueeze(-2)  # A D^{-1/2}
        B = A_scaled @ A_scaled.mT
        B = B + torch.eye(B.shape[-1], dtype=B.dtype, device=B.device)
        L_B = psd_safe_cholesky(B)
        c = torch.linalg.solve_triangular(L_B, (A @ (resid / noise).unsqueeze(-1)), upper=False).squeeze(-1)
        return L_B, c

    def _state_key(self, dtype):
        """What the eval-mode factorisation depends on: every parameter and buffer, the data, the settings."""
        X, y = self.train_inputs[0], self.train_targets
        jitter = settings.variational_cholesky_jitter.value(dtype)
        return state_key(self, X, y, settings=(jitter, settings.detach_test_caches.on()))

    def _train_factors(self):
        """``(L, L_B, c)`` of the training data, cached in eval mode until a value changes.

        ``L = chol(K_zz)`` and ``L_B, c`` (module docstring) cost O(n m² + m³); a prediction then costs
        O(b m²). Detached when ``settings.detach_test_caches`` is on (the default) or grad is off; a
        factor that still carries a graph is rebuilt each call (a ``backward`` may have freed it).
        """
        key = self._state_key(self.inducing_points.dtype)
        cache = getattr(self, "_cache", None)  # absent in models pickled before the cache existed
        if cache is not None and cache[0] == key and not cache[1].requires_grad:
            return cache[1:]
        X, y = self.train_inputs[0], self.train_targets
        _, mean_t, K_zz, K_zx, _, _ = self._prior_blocks(X)
        L = self._chol_zz(K_zz)
        A_t = torch.linalg.solve_triangular(L, K_zx, upper=False)
        noise = self.likelihood._noise(mean_t)
        L_B, c = self._woodbury(A_t, noise, y - mean_t)
        if settings.detach_test_caches.on() or not torch.is_grad_enabled():
            L, L_B, c = L.detach(), L_B.detach(), c.detach()
        self._cache = (key, L, L_B, c)
        return L, L_B, c

    def __call__(self, x: torch.Tensor, **kwargs) -> MultivariateNormal:
        """Train mode: ``N(μ(x), Q_xx)`` for the bound; eval mode: the predictive at ``x``; ``(*batch, b)``.

        Forward pre-hooks and forward hooks registered on the model run around this call.
        """
        return call_with_hooks(self, self._predict, (x,), kwargs)

    def _predict(self, x: torch.Tensor, **kwargs) -> MultivariateNormal:
        x = x.unsqueeze(-1) if x.dim() == 1 else x
        if self.training:
            mean_x, A, kxx_diag, _ = self._blocks(x)
            return MultivariateNormal(mean_x, NystromCovariance(A, kxx_diag))
        L, L_B, c = self._train_factors()
        _, mean_x, _, K_zx, kxx_diag, kxx_dense = self._prior_blocks(x)
        A = torch.linalg.solve_triangular(L, K_zx, upper=False)  # A* = L⁻¹ K_z*
        V = torch.linalg.solve_triangular(L_B, A, upper=False)  # L_B⁻¹ A*
        mean = mean_x + (V.mT @ c.unsqueeze(-1)).squeeze(-1)
        return MultivariateNormal(mean, _PredictiveCovariance(kxx_diag, kxx_dense, A, V))

    def collapsed_bound(self, output: MultivariateNormal, target: torch.Tensor) -> torch.Tensor:
        """Titsias' bound ``F`` ``(*batch)`` (not divided by n) from a train-mode output."""
        cov = output.lazy_covariance_matrix
        if not isinstance(cov, NystromCovariance):
            raise ModelTypeError(
                "collapsed_bound needs the train-mode output model(train_x) of an SGPR (call model.train())."
            )
        A, kxx_diag, mean = cov.A, cov.kxx_diag, output.mean
        n = mean.shape[-1]
        noise = self.likelihood._noise(mean)
        resid = target - mean
        L_B, c = self._woodbury(A, noise, resid)
        quad = (resid.pow(2) / noise).sum(-1) - c.pow(2).sum(-1)
        logdet = noise.log().sum(-1) + 2 * L_B.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        trace = ((kxx_diag - A.pow(2).sum(-2)) / noise).sum(-1)
        return -0.5 * (quad + logdet + n * torch.log(torch.tensor(2 * torch.pi, dtype=mean.dtype)) + trace)
