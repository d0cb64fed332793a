r"""Online variational conditioning (OVC; Maddox, Stanton & Wilson 2021): an SVGP conditioned on new data.

For a Gaussian likelihood the SVGP's ``q(u) = N(m_u, S_u)`` (``u = f(Z) - μ(Z)``, prior ``u ~ N(0, K)``,
``K = K_zz + εI``) is the exact posterior of the GP given *pseudo-observations* ``ỹ = u + η``,
``η ~ N(0, Σ̃)`` at ``Z`` (Maddox et al. 2021, eq. (4)–(5)):

.. math:: \tilde\Sigma = (S_u^{-1} - K^{-1})^{-1},\qquad \tilde y = \tilde\Sigma\, S_u^{-1} m_u,

so that ``K(K + Σ̃)⁻¹ỹ = m_u`` and ``K - K(K + Σ̃)⁻¹K = S_u``: the exact GP on ``(Z, ỹ + μ(Z))`` with noise
``Σ̃`` predicts exactly what the SVGP predicts. New observations ``(X, y)`` with the likelihood's noise
``σ²`` are then added as ordinary training points, which is Bayes' rule on ``q``: the returned
:class:`~torchgp.models.ExactGP` over ``[Z; X]`` with noise ``blockdiag(Σ̃, σ²I)`` is ``q(f | y)``.

In whitened coordinates ``S_w = L⁻¹ S_u L⁻ᵀ = U diag(s) Uᵀ`` (``K = L Lᵀ``), ``Σ̃ = L U diag(s/(1-s)) Uᵀ Lᵀ``
and ``ỹ = L U diag(1/(1-s)) Uᵀ L⁻¹ m_u``. Eigenvalues ``s ≥ 1`` (directions where ``q`` is no narrower than the
prior: nothing was learnt there) are capped just below 1, giving a very large pseudo-noise, as the exact
limit has; a warning says so when it happens.
"""

from __future__ import annotations

import copy
import warnings

import torch

from torchgp._shapes import broadcast_shapes
from torchgp.distributions import MultivariateNormal
from torchgp.errors import ModelTypeError, NumericalWarning, ShapeError
from torchgp.likelihoods.gaussian import GaussianLikelihood, _GaussianLikelihoodBase
from torchgp.models.exact_gp import ExactGP

__all__ = ["online_fantasy_model", "pseudo_points"]

_S_CAP = 1e-8  # 1 - s is kept ≥ this: pseudo-noise at most 1e8 × the prior variance in that direction


def pseudo_points(strategy) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""``(Z, ỹ + μ(Z), Σ̃)`` of the strategy's ``q(u)``: ``(*batch, m, d)``, ``(*batch, m)``, ``(*batch, m, m)``.

    ``Σ̃`` includes the jitter ``εI`` the strategy adds to ``K_zz``, so that the exact GP with the plain
    kernel and noise ``Σ̃`` sees the same prior covariance ``K_zz + εI`` at ``Z`` as the strategy.
    """
    from torchgp.variational import CiqVariationalStrategy, UnwhitenedVariationalStrategy, VariationalStrategy

    if not isinstance(strategy, (VariationalStrategy, UnwhitenedVariationalStrategy, CiqVariationalStrategy)):
        raise ModelTypeError(
            f"get_fantasy_model supports VariationalStrategy, UnwhitenedVariationalStrategy and "
            f"CiqVariationalStrategy; got {type(strategy).__name__}. Build the model with one of these."
        )
    q = strategy._variational_distribution
    if q.is_delta:
        raise ModelTypeError(
            "get_fantasy_model needs a Gaussian q(u) with a covariance; DeltaVariationalDistribution has none. "
            "Use CholeskyVariationalDistribution."
        )
    with torch.no_grad():
        strategy._initialize()
        Z = strategy.inducing_points.detach()
        prior = strategy._prior_at_inducing()
        mu_z = prior.mean
        eps = strategy._jitter(Z.dtype)
        K = prior.covariance_matrix + eps * torch.eye(Z.shape[-2], dtype=Z.dtype, device=Z.device)
        L = torch.linalg.cholesky(K)
        q_mean, q_chol = q.mean_and_scale_tril()
        # q in the Cholesky-whitened coordinates w = L⁻¹ u: mean m_w, covariance S_w = R Rᵀ
        if isinstance(strategy, UnwhitenedVariationalStrategy):
            rhs = torch.cat([(q_mean - mu_z).unsqueeze(-1), q_chol.expand(*L.shape[:-2], *q_chol.shape[-2:])], -1)
            sol = torch.linalg.solve_triangular(L, rhs, upper=False)
            m_w, R = sol[..., 0], sol[..., 1:]
        elif isinstance(strategy, CiqVariationalStrategy):  # u = K^{1/2} v: w = L⁻¹ K^{1/2} v
            e, U = torch.linalg.eigh(K)
            rot = torch.linalg.solve_triangular(L, U @ (e.sqrt().unsqueeze(-1) * U.mT), upper=False)
            m_w, R = (rot @ q_mean.unsqueeze(-1)).squeeze(-1), rot @ q_chol
        else:
            m_w, R = q_mean.expand(*L.shape[:-1]), q_chol.expand(*L.shape)
        s, U = torch.linalg.eigh(R @ R.mT)
        if bool((s > 1 - _S_CAP).any()):
            warnings.warn(
                f"get_fantasy_model: q(u) is as wide as the prior or wider in {int((s > 1 - _S_CAP).sum())} "
                "direction(s) (S_u ⪰ K_zz there); their pseudo-observation noise was capped at "
                f"{1 / _S_CAP:.0e} × the prior variance (no information). Train the model longer if unexpected.",
                NumericalWarning,
                stacklevel=3,
            )
        one_minus = (1 - s).clamp_min(_S_CAP)
        s = s.clamp_min(0.0)
        # Σ̃ = L U diag(s/(1-s)) Uᵀ Lᵀ + εI and ỹ = L U diag(1/(1-s)) Uᵀ m_w  (module equations)
        LU = L @ U
        noise = LU @ ((s / one_minus).unsqueeze(-1) * LU.mT)
        noise = (noise + noise.mT) / 2 + eps * torch.eye(Z.shape[-2], dtype=Z.dtype, device=Z.device)
        y_tilde = (LU @ ((U.mT @ m_w.unsqueeze(-1)) / one_minus.unsqueeze(-1))).squeeze(-1)
    return Z, y_tilde + mu_z, noise


class _PseudoObservationLikelihood(_GaussianLikelihoodBase):
    """A Gaussian likelihood with the noise ``blockdiag(Σ̃, σ²I)`` at the training inputs ``[Z; X]``.

    At any other inputs (predictions: ``likelihood(model(X*), X*)`` or ``likelihood(model(X*))``) it is the
    SVGP's own likelihood, homoskedastic ``σ²``.
    """

    def __init__(self, base: GaussianLikelihood, train_inputs: torch.Tensor, train_noise: torch.Tensor):
        super().__init__(base.noise_covar, batch_shape=base.batch_shape)
        self.register_buffer("train_inputs_", train_inputs)
        self.register_buffer("train_noise", train_noise)

    @property
    def noise(self) -> torch.Tensor:
        return self.noise_covar.noise

    def _at_train(self, params) -> bool:
        x, T = (params[0] if params else None), self.train_inputs_
        if not torch.is_tensor(x) or x.shape[-2:] != T.shape[-2:]:
            return False
        try:
            return torch.equal(*torch.broadcast_tensors(x, T))
        except RuntimeError:  # batch shapes that do not broadcast: not the training inputs
            return False

    def marginal(self, function_dist: MultivariateNormal, *params, **kwargs) -> MultivariateNormal:
        """``N(μ, K + blockdiag(Σ̃, σ²I))`` at the training inputs, else ``N(μ, K + σ²I)``; ``(*batch, n)``."""
        if not self._at_train(params):
            return super().marginal(function_dist, *params, **kwargs)
        return MultivariateNormal(function_dist.mean, function_dist.covariance_matrix + self.train_noise)


class _OnlineFantasyGP(ExactGP):
    """The exact GP over ``[Z; X]`` that OVC returns: the SVGP's mean and kernel, pseudo-point noise."""

    def __init__(self, train_inputs, train_targets, likelihood, mean_module, covar_module):
        super().__init__(train_inputs, train_targets, likelihood)
        self.mean_module = mean_module
        self.covar_module = covar_module

    def forward(self, x):
        return MultivariateNormal(self.mean_module(x), self.covar_module(x))

    def get_fantasy_model(self, inputs, targets, **kwargs) -> ExactGP:
        """Condition on more observations ``(*batch, q, d)``, ``(*batch, q)``: the pseudo-point noise is kept."""
        return _append(self, self.likelihood.train_noise, inputs, targets)


def _append(model, noise, inputs, targets) -> _OnlineFantasyGP:
    """``model``'s training data and noise ``(*batch, n, n)`` extended by ``(inputs, targets)`` with noise ``σ²I``."""
    train_x, train_y = model.train_inputs[0], model.train_targets
    X = torch.as_tensor(inputs, dtype=train_x.dtype, device=train_x.device).detach()
    if X.dim() == 1:
        X = X.unsqueeze(-1)
    y = torch.as_tensor(targets, dtype=train_x.dtype, device=train_x.device).detach()
    if X.shape[-2] != y.shape[-1] or X.shape[-1] != train_x.shape[-1]:
        raise ShapeError(
            f"get_fantasy_model: inputs {tuple(X.shape)} must be (*batch, q, d = {train_x.shape[-1]}) and targets "
            f"{tuple(y.shape)} (*batch, q) with the same q."
        )
    batch = broadcast_shapes(train_x.shape[:-2], X.shape[:-2], y.shape[:-1], noise.shape[:-2])
    n, q, d = train_x.shape[-2], X.shape[-2], X.shape[-1]
    new_x = torch.cat([train_x.expand(*batch, n, d), X.expand(*batch, q, d)], -2)
    new_y = torch.cat([train_y.expand(*batch, n), y.expand(*batch, q)], -1)
    lik = model.likelihood
    with torch.no_grad():
        sigma2 = lik.noise.detach().squeeze(-1)  # (*lik_batch)
    full = torch.zeros(*batch, n + q, n + q, dtype=X.dtype, device=X.device)
    full[..., :n, :n] = noise
    full[..., n:, n:] = sigma2.reshape(*sigma2.shape, 1, 1) * torch.eye(q, dtype=X.dtype, device=X.device)
    new_lik = _PseudoObservationLikelihood(copy.deepcopy(lik), new_x, full)
    mean_module, covar_module = copy.deepcopy(model.mean_module), copy.deepcopy(model.covar_module)
    return _OnlineFantasyGP(new_x, new_y, new_lik, mean_module, covar_module).eval()


def online_fantasy_model(model, inputs, targets, mean_module=None, covar_module=None, **kwargs) -> ExactGP:
    r"""OVC: the SVGP ``model`` conditioned on ``(inputs, targets)``, as an exact GP over ``[Z; inputs]``.

    Args:
        model: an :class:`~torchgp.models.ApproximateGP` with a Gaussian ``model.likelihood`` (GPyTorch reads
            the likelihood from this attribute; set ``model.likelihood = likelihood``).
        inputs: ``(*batch, q, d)`` or ``(f, *batch, q, d)`` (or ``(q,)`` for 1-D inputs).
        targets: ``(*batch, q)`` or ``(f, *batch, q)``; extra leading dimensions give a batch of fantasy
            models sharing the inputs.
        mean_module, covar_module: the prior's mean and kernel (default ``model.mean_module`` and
            ``model.covar_module``); they are copied, so the SVGP is left untouched.

    Returns:
        An :class:`~torchgp.models.ExactGP` in eval mode with ``m + q`` training points whose predictions are
        ``q(f | targets)``; ``fantasy.likelihood(fantasy(X*), X*)`` adds the SVGP likelihood's noise.

    Raises:
        ModelTypeError: no Gaussian ``model.likelihood``, no mean/kernel module, or an unsupported strategy.
        ShapeError: ``inputs`` and ``targets`` disagree in their number of points.
    """
    lik = getattr(model, "likelihood", None)
    if not isinstance(lik, GaussianLikelihood):
        raise ModelTypeError(
            "get_fantasy_model (online variational conditioning) is exact only for a GaussianLikelihood, read "
            f"from model.likelihood; got {type(lik).__name__}. Set model.likelihood = GaussianLikelihood() (the "
            "one trained with the model); non-Gaussian likelihoods are not supported."
        )
    mean_module = getattr(model, "mean_module", None) if mean_module is None else mean_module
    covar_module = getattr(model, "covar_module", None) if covar_module is None else covar_module
    if mean_module is None or covar_module is None:
        raise ModelTypeError(
            "get_fantasy_model needs the prior's mean and kernel: give the model attributes mean_module and "
            "covar_module, or pass get_fantasy_model(..., mean_module=..., covar_module=...)."
        )
    Z, y_tilde, noise = pseudo_points(model.variational_strategy)
    with torch.no_grad():
        base = _OnlineFantasyGP(Z, y_tilde, _PseudoObservationLikelihood(lik, Z, noise), mean_module, covar_module)
    return _append(base, noise, inputs, targets)
