r"""A frozen, closed-form copy of an exact GP's posterior for the inner loop of acquisition optimisation.

Maximising an acquisition function calls the model's posterior some tens of times at a few points,
with the hyperparameters and the data fixed. :class:`PosteriorSnapshot` takes what that posterior
needs once (R&W 2006, Alg. 2.1: the factor :math:`L L^\top = K + \sigma^2 I` and
:math:`\alpha = (K + \sigma^2 I)^{-1}(y - c)` from the model's own cached posterior, the constrained
hyperparameter values) and then evaluates, for test points ``x`` with
:math:`k_* = s\,\kappa(\lVert (x - X)/\ell \rVert^2)`,

.. math:: \mu(x) = c + k_*^\top\alpha,\qquad \sigma^2(x) = s\,\kappa(0) - \lVert L^{-1}k_*\rVert^2

(lines 4–6 of Alg. 2.1) in a handful of tensor operations, with the gradient in ``x`` in closed form
where the kernel states its derivative ``dK_dr2``. The model's path re-derives its cache key, builds lazy operators and
records an autograd graph through them on every call; this one does not.

It covers exact GPs with a constant or zero mean, a stationary kernel of ``x / ℓ`` (optionally under a
``ScaleKernel``) on all input columns and a homoskedastic :class:`~torchgp.likelihoods.GaussianLikelihood`,
one output and no batch (the models of :func:`torchgp.bo.minimize`); :meth:`PosteriorSnapshot.of`
returns ``None`` for anything else, and also when the snapshot does not reproduce the model's own
posterior at probe points (a ``forward`` that is not ``MultivariateNormal(mean_module(x), covar_module(x))``).

:func:`frozen_posterior` routes the acquisition functions of :mod:`torchgp.bo` through a snapshot for
the length of a ``with`` block; :func:`torchgp.bo.optimize_acqf` uses it around each optimisation, so a
change of the model's data or hyperparameters between two calls is always seen.
"""

from __future__ import annotations

import contextlib
import contextvars

import torch
from torch.autograd.function import once_differentiable

from torchgp import settings
from torchgp.kernels import ScaleKernel
from torchgp.kernels.kernel import Kernel
from torchgp.kernels.stationary import StationaryKernel
from torchgp.likelihoods import GaussianLikelihood
from torchgp.means import ConstantMean, ZeroMean
from torchgp.models import ExactGP

_ACTIVE: contextvars.ContextVar[tuple | None] = contextvars.ContextVar("torchgp_bo_frozen_posterior", default=None)


def _base_and_scale(covar_module):
    """``(stationary base kernel, outputscale (0-d) or None)``, or ``None`` when the kernel is not covered."""
    scale = None
    base = covar_module
    if type(covar_module) is ScaleKernel:
        if covar_module.active_dims is not None or covar_module.outputscale.numel() != 1:
            return None
        base, scale = covar_module.base_kernel, covar_module.outputscale.reshape(())
    if not isinstance(base, StationaryKernel) or base.active_dims is not None:
        return None
    if type(base).scaled is not Kernel.scaled or type(base).K_r2 is StationaryKernel.K_r2:
        return None  # features other than x / ℓ (periodic), or a kernel that only overrides forward
    if (
        type(base).forward is not StationaryKernel.forward
        or type(base).forward_diag is not StationaryKernel.forward_diag
    ):
        return None
    if base.lengthscale.dim() != 2 or base.lengthscale.shape[0] != 1:
        return None  # batched lengthscales
    return base, scale


def _covered(model) -> bool:
    """Whether ``model`` has the structure the snapshot reproduces (checked before probing it)."""
    if not isinstance(model, ExactGP) or model.training or model.train_inputs is None:
        return False
    if len(model.train_inputs) != 1 or model.train_inputs[0].dim() != 2 or model.train_targets.dim() != 1:
        return False
    if not torch.isfinite(model.train_targets).all():
        return False  # missing observations take the model's masking path
    if type(model.likelihood) is not GaussianLikelihood or model.likelihood.noise.numel() != 1:
        return False
    mean = getattr(model, "mean_module", None)
    if not (type(mean) is ZeroMean or (type(mean) is ConstantMean and mean.constant.numel() == 1)):
        return False
    if settings.fast_pred_var.on() or settings.skip_posterior_variances.on():
        return False  # LOVE's approximate variances, or none: the model's own path
    return _base_and_scale(getattr(model, "covar_module", None)) is not None


class PosteriorSnapshot:
    """The posterior of an exact GP at fixed hyperparameters and data, in closed form (see the module docs).

    Build it with :meth:`of`; it does not follow later changes to the model.

    Attributes:
        train_x: ``(n, d)`` training inputs divided by the lengthscale.
        L: ``(n, n)`` lower Cholesky factor of ``K + σ²I``; alpha: ``(n,)``.
        noise: the likelihood's noise variance σ² (0-d).
    """

    def __init__(self, model):
        base, scale = _base_and_scale(model.covar_module)
        with torch.no_grad():
            posterior = model._posterior()  # the model's cached factor: one Cholesky per state
            if not posterior.use_cholesky:
                raise ValueError("PosteriorSnapshot needs the Cholesky path (n within settings.max_cholesky_size).")
            self.kernel = base
            self.lengthscale = base.lengthscale.detach().reshape(1, -1)  # (1, d) or (1, 1)
            self.train_x = model.train_inputs[0].detach() / self.lengthscale
            self.L = posterior.L.detach()
            self.alpha = posterior.alpha.detach().reshape(-1)
            self.params = tuple(p.detach() for p in base.profile_params())
            ref = self.train_x
            self.scale = torch.ones((), dtype=ref.dtype, device=ref.device) if scale is None else scale.detach()
            mean = model.mean_module
            self.constant = (
                mean.constant.detach().reshape(()) if isinstance(mean, ConstantMean) else torch.zeros_like(self.scale)
            )
            self.noise = model.likelihood.noise.detach().reshape(())
            kappa0 = base.K_r2(torch.zeros(1, 1, dtype=ref.dtype, device=ref.device), *self.params).reshape(())
            self.prior_var = self.scale * kappa0
            self.min_variance = settings.min_variance.value(ref.dtype)
        self.closed_form_grad = type(base).dK_dr2 is not StationaryKernel.dK_dr2

    @classmethod
    def of(cls, model, rtol: float | None = None) -> PosteriorSnapshot | None:
        """A snapshot of ``model`` (in eval mode), or ``None`` if it is not covered or does not match its posterior.

        Args:
            model: a fitted exact GP in eval mode.
            rtol: relative agreement with ``model.posterior`` required at two probe points (the training
                inputs' mean, and the first training input moved by half a lengthscale); default 1e-8 in
                float64, 1e-4 otherwise.
        """
        if not _covered(model):
            return None
        X = model.train_inputs[0]
        rtol = (1e-8 if X.dtype == torch.float64 else 1e-4) if rtol is None else rtol
        try:
            snap = cls(model)
        except ValueError:
            return None
        with torch.no_grad():
            probe = torch.stack([X.mean(0), X[0] + 0.5 * snap.lengthscale.reshape(-1)])
            post = model.posterior(probe)
            mean, var = snap.moments(probe)
            ok = torch.allclose(mean, post.mean, rtol=rtol, atol=rtol * post.mean.abs().max().clamp_min(1.0))
            ok = ok and torch.allclose(var, post.variance, rtol=rtol, atol=rtol * snap.prior_var.abs())
        return snap if ok else None

    def cross(self, X: torch.Tensor) -> torch.Tensor:
        """``K(X, X_train)`` ``(t, n)`` for ``X (t, d)``, differentiable in ``X`` by autograd."""
        r2 = (X.unsqueeze(-2) / self.lengthscale - self.train_x).square().sum(-1)
        return self.scale * self.kernel.K_r2(r2, *self.params)

    def moments(self, X: torch.Tensor, observation_noise: bool = False, joint: bool = False):
        """Posterior mean and variance at ``X (*batch, q, d)``: ``(*batch, q)`` each.

        With ``joint``, the second output is each batch's ``q × q`` covariance ``(*batch, q, q)``.
        ``observation_noise`` adds the likelihood's σ² (the predictive of a new observation). The
        variances are clamped below at ``settings.min_variance``, as the model's are.
        """
        batch, (q, d) = X.shape[:-2], X.shape[-2:]
        X = X.to(self.train_x.dtype)
        if not joint or q == 1:
            noise = self.noise if observation_noise else torch.zeros_like(self.noise)
            if self.closed_form_grad and X.requires_grad:
                mean, var = _MarginalMoments.apply(X.reshape(-1, d), self, noise)
            else:
                mean, var = _marginal_moments(self, X.reshape(-1, d), noise)
            mean, var = mean.reshape(*batch, q), var.reshape(*batch, q)
            return (mean, var.unsqueeze(-1)) if joint else (mean, var)
        Xf = X.reshape(-1, q, d)
        K_sx = self.cross(Xf.reshape(-1, d))  # (b q, n)
        mean = self.constant + K_sx @ self.alpha
        V = torch.linalg.solve_triangular(self.L, K_sx.mT, upper=False).mT.reshape(-1, q, K_sx.shape[-1])
        a = Xf / self.lengthscale
        r2 = (a.unsqueeze(-2) - a.unsqueeze(-3)).square().sum(-1)  # (b, q, q)
        cov = self.scale * self.kernel.K_r2(r2, *self.params) - V @ V.mT  # Alg. 2.1 line 6, per q-batch
        if observation_noise:
            cov = cov + self.noise * torch.eye(q, dtype=cov.dtype, device=cov.device)
        return mean.reshape(*batch, q), cov.reshape(*batch, q, q)


def _marginal_moments(snap: PosteriorSnapshot, X: torch.Tensor, noise: torch.Tensor):
    """``(μ (t,), σ² (t,))`` at ``X (t, d)`` by plain tensor operations (differentiable by autograd)."""
    K_sx = snap.cross(X)
    mean = snap.constant + K_sx @ snap.alpha  # Alg. 2.1 line 4
    V = torch.linalg.solve_triangular(snap.L, K_sx.mT, upper=False)  # line 5
    var = (snap.prior_var - V.square().sum(-2) + noise).clamp_min(snap.min_variance)  # line 6
    return mean, var


class _MarginalMoments(torch.autograd.Function):
    r"""``(μ, σ²)`` at ``X (t, d)`` as one node, with the gradient in ``X`` in closed form.

    With :math:`a_t = x_t/\ell`, :math:`r^2_{tj} = \lVert a_t - b_j\rVert^2`, :math:`K_{tj} = s\,\kappa(r^2_{tj})`,
    :math:`V = L^{-1}K^\top` and :math:`U = L^{-\top}V = (K + \sigma^2 I)^{-1}K^\top`, the incoming gradients
    :math:`\bar\mu, \overline{\sigma^2}` give

    .. math::
        \bar K_{tj} = \bar\mu_t\,\alpha_j - 2\,\overline{\sigma^2}_t\,U_{jt},\qquad
        W = \bar K \circ s\,\kappa'(r^2),\qquad
        \bar x_t = \frac{2}{\ell}\Big(a_t \sum_j W_{tj} - \sum_j W_{tj}\, b_j\Big)

    (the chain rule through :math:`\partial r^2_{tj}/\partial a_t = 2(a_t - b_j)`; no ``t × n × d`` tensor).
    A variance clamped at ``min_variance`` passes no gradient, as ``clamp_min`` does. First derivatives only: a second
    derivative (``create_graph=True``, then differentiating again) raises.
    """

    @staticmethod
    def forward(ctx, X, snap, noise):
        a = X / snap.lengthscale
        r2 = (a.unsqueeze(-2) - snap.train_x).square().sum(-1)  # (t, n)
        kern = snap.kernel
        if kern.K_dK_r2 is not None and not snap.params:
            kappa, dkappa = kern.K_dK_r2(r2)
        else:
            kappa = kern.K_r2(r2, *snap.params)
            dkappa = kern.dK_dr2(r2, kappa, *snap.params)
        K_sx = snap.scale * kappa
        mean = snap.constant + K_sx @ snap.alpha
        V = torch.linalg.solve_triangular(snap.L, K_sx.mT, upper=False)  # (n, t)
        raw = snap.prior_var - V.square().sum(-2) + noise
        var = raw.clamp_min(snap.min_variance)
        ctx.snap = snap
        ctx.save_for_backward(a, dkappa, V, raw)
        return mean, var

    @staticmethod
    @once_differentiable  # a second derivative through this node raises instead of coming out wrong
    def backward(ctx, g_mean, g_var):
        a, dkappa, V, raw = ctx.saved_tensors
        snap = ctx.snap
        g_var = torch.where(raw >= snap.min_variance, g_var, 0.0)
        U = torch.linalg.solve_triangular(snap.L.mT, V, upper=True)  # (n, t) = (K + σ²I)⁻¹ K_xs
        G = g_mean.unsqueeze(-1) * snap.alpha - 2 * g_var.unsqueeze(-1) * U.mT  # ∂/∂K_sx, (t, n)
        W = G * dkappa * snap.scale
        grad_a = 2 * (a * W.sum(-1, keepdim=True) - W @ snap.train_x)
        return grad_a / snap.lengthscale, None, None


@contextlib.contextmanager
def frozen_posterior(model):
    """Inside the block, :mod:`torchgp.bo`'s acquisition functions on ``model`` use a :class:`PosteriorSnapshot`.

    The snapshot is taken on entry; changes to the model inside the block are not seen (gradients flow
    to the candidates ``X`` only, not to the hyperparameters). Models the snapshot does not cover keep
    their own path. Yields the snapshot, or ``None``.

    Example:
        >>> with frozen_posterior(model):  # doctest: +SKIP
        ...     values = acqf(X)           # doctest: +SKIP
    """
    snap = PosteriorSnapshot.of(model)
    if snap is None:
        yield None
        return
    outer = _ACTIVE.get()
    token = _ACTIVE.set(((model, snap), outer))
    try:
        yield snap
    finally:
        _ACTIVE.reset(token)


def active_snapshot(model) -> PosteriorSnapshot | None:
    """The snapshot of ``model`` in force (innermost :func:`frozen_posterior` block), or ``None``."""
    entry = _ACTIVE.get()
    while entry is not None:
        (held, snap), entry = entry
        if held is model:
            return snap
    return None
