r"""Monte Carlo acquisition functions of ``q ≥ 1`` jointly chosen candidates.

The joint posterior of the ``q`` points of each batch, :math:`N(\mu, \Sigma)`, is sampled by the
reparameterisation :math:`\xi_s = \mu + L\varepsilon_s`, :math:`LL^\top = \Sigma`, with *fixed* base
samples :math:`\varepsilon_s` (scrambled Sobol points mapped through the inverse normal CDF). With the
base samples fixed the estimate is a deterministic, smooth function of ``X``, so it can be maximised
by L-BFGS-B with autograd gradients (Wilson et al. 2018, "Maximizing acquisition functions for
Bayesian optimization"; Balandat et al. 2020, BoTorch).

.. math::
    \mathrm{qEI}(X) \approx \frac1S\sum_{s=1}^S \max_{j\le q}\,(\xi_{sj} - f^*)_+
"""

from __future__ import annotations

import math

import torch

from torchgp import settings
from torchgp.bo.acquisition import AcquisitionFunction, as_float64, posterior_moments
from torchgp.errors import InputError
from torchgp.linalg.cholesky import psd_safe_cholesky


def sobol_normal_samples(num_samples: int, q: int, seed: int = 0, dtype=torch.float64, device=None) -> torch.Tensor:
    """Quasi-random standard normal base samples: scrambled Sobol points through ``Φ⁻¹``.

    Args:
        num_samples: S, the number of samples (a power of 2 balances the Sobol sequence best).
        q: dimension of each sample.
        seed: scrambling seed (same seed, same samples).

    Returns:
        ``(S, q)`` tensor of ``dtype`` on ``device``.
    """
    u = torch.quasirandom.SobolEngine(dimension=q, scramble=True, seed=seed).draw(num_samples, dtype=torch.float64)
    eps = torch.finfo(torch.float64).eps
    return torch.special.ndtri(u.clamp(eps, 1 - eps)).to(dtype=dtype, device=device)


def logmeanexp(x: torch.Tensor, dim: int) -> torch.Tensor:
    """``log(mean(exp(x)))`` along ``dim``, without overflow or underflow."""
    return torch.logsumexp(x, dim=dim) - math.log(x.shape[dim])


def smooth_amax(x: torch.Tensor, tau: float, dim: int = -1) -> torch.Tensor:
    r"""Smooth maximum :math:`\tau \log\sum_j e^{x_j/\tau}` (→ max as τ → 0; exact for one element)."""
    return tau * torch.logsumexp(x / tau, dim=dim)


def log_softplus(x: torch.Tensor, tau: float) -> torch.Tensor:
    r"""``log(τ · softplus(x/τ))``, a smooth ``log(max(x, 0))`` that is finite (≈ ``x/τ + log τ``) for x ≪ 0.

    Ament et al. (2023), Sec. 4.2: the smoothed improvement of qLogEI.
    """
    u = x / tau
    small = u < -30  # softplus(u) = e^u (1 + O(e^u)); below e^-30 its log is u to double precision
    u_big = u.clamp_min(-30.0)  # keep the softplus branch finite so its gradient is never NaN
    return math.log(tau) + torch.where(small, u, torch.log(torch.nn.functional.softplus(u_big)))


class MCAcquisitionFunction(AcquisitionFunction):
    """Base class: reparameterised samples of the joint posterior of each q-batch.

    Args:
        model: fitted single-output model in eval mode.
        num_samples: S, Monte Carlo samples per evaluation (fixed quasi-random base samples).
        seed: seed of the Sobol scrambling; the same seed gives the same (deterministic) estimate.
        likelihood: optional; sample the noisy predictive ``likelihood(model(X))``.

    Shapes:
        ``acqf(X (*batch, q, d))`` → ``(*batch)``.
    """

    def __init__(self, model, num_samples: int = 512, seed: int = 0, likelihood=None):
        super().__init__(model, likelihood)
        if int(num_samples) < 1:
            raise InputError(f"{type(self).__name__}: num_samples must be a positive integer; got {num_samples}.")
        self.num_samples = int(num_samples)
        self.seed = int(seed)
        self._base = {}

    def base_samples(self, q: int, dtype: torch.dtype, device) -> torch.Tensor:
        """The fixed base samples ``ε`` for batches of q points, ``(S, q)`` (cached)."""
        key = (q, dtype, device)
        if key not in self._base:
            self._base[key] = sobol_normal_samples(self.num_samples, q, self.seed, dtype, device)
        return self._base[key]

    def samples(self, X: torch.Tensor) -> torch.Tensor:
        """Joint posterior samples ``ξ = μ + Lε`` at ``X (*batch, q, d)``, ``(S, *batch, q)``."""
        return self._mean_and_samples(X)[1]

    def _mean_and_samples(self, X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean ``μ (*batch, q)`` and samples ``ξ (S, *batch, q)`` at ``X (*batch, q, d)``."""
        X = self._checked(X)
        q = X.shape[-2]
        mean, cov = posterior_moments(self.model, X, self.likelihood, joint=True)
        if q == 1:
            L = cov.clamp_min(0).sqrt()
        else:
            # Coinciding candidates make Σ singular; a tiny relative jitter keeps the factor smooth and warning-free.
            diag = cov.diagonal(dim1=-2, dim2=-1)
            jitter = settings.cholesky_jitter.value(cov.dtype) * diag.mean(-1, keepdim=True).clamp_min(
                settings.min_variance.value(cov.dtype)
            )
            L = psd_safe_cholesky(cov + torch.diag_embed(jitter.expand_as(diag)))
        eps = self.base_samples(q, mean.dtype, mean.device)
        return mean, mean.unsqueeze(0) + torch.einsum("...ij,sj->s...i", L, eps)


class _MCImprovementBase(MCAcquisitionFunction):
    """Shared ``best_f`` / ``maximize``: improvement samples ``±(ξ - f*)``, ``(S, *batch, q)``."""

    def __init__(self, model, best_f, maximize: bool = True, num_samples: int = 512, seed: int = 0, likelihood=None):
        super().__init__(model, num_samples, seed, likelihood)
        self.register_buffer("best_f", as_float64(best_f))
        self.maximize = maximize

    def _improvement(self, X: torch.Tensor) -> torch.Tensor:
        xi = self.samples(X)
        diff = xi - self.best_f.to(xi).unsqueeze(-1)  # best_f broadcasts against *batch
        return diff if self.maximize else -diff


class qExpectedImprovement(_MCImprovementBase):
    r"""q-batch expected improvement (Monte Carlo), the batch analogue of Jones et al. (1998).

    .. math:: \mathrm{qEI}(X) = \mathbb E\big[\max_{j\le q}(f(x_j) - f^*)_+\big]
        \approx \frac1S\sum_s \max_j (\xi_{sj} - f^*)_+

    Args:
        model: fitted single-output model in eval mode.
        best_f: incumbent ``f*``: a float or a tensor broadcastable to ``*batch``.
        maximize: maximise (default) or minimise the objective.
        num_samples: S, quasi-Monte Carlo samples.
        seed: seed of the fixed base samples.
        likelihood: optional; sample the noisy predictive.

    Shapes:
        ``X (*batch, q, d)`` → ``(*batch)``.
    """

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        return self._improvement(X).clamp_min(0).amax(dim=-1).mean(dim=0)


class qLogExpectedImprovement(_MCImprovementBase):
    r"""Logarithm of a smoothed q-batch expected improvement (Ament et al. 2023, Sec. 4.2).

    The ReLU of each improvement is replaced by a softplus of temperature ``tau_relu`` and the max over
    the q points by a log-sum-exp of temperature ``tau_max``, both taken in log space, and the mean over
    samples by a log-mean-exp:

    .. math:: \mathrm{qLogEI}(X) = \log\frac1S\sum_s \exp\Big(\tau_{\max}\log\sum_j
        \exp\big(\log(\tau_0\,\mathrm{softplus}((\xi_{sj} - f^*)/\tau_0))/\tau_{\max}\big)\Big)

    It tends to ``log qEI`` as both temperatures go to 0 (exact in the max for ``q = 1``), and unlike
    qEI it stays finite with useful gradients where every sample shows no improvement.

    Args:
        model: fitted single-output model in eval mode.
        best_f: incumbent ``f*``: a float or a tensor broadcastable to ``*batch``.
        maximize: maximise (default) or minimise the objective.
        num_samples: S, quasi-Monte Carlo samples.
        seed: seed of the fixed base samples.
        tau_max: temperature of the smooth max over the q points (in log space).
        tau_relu: temperature of the softplus that smooths ``max(ξ - f*, 0)``.
        likelihood: optional; sample the noisy predictive.

    Shapes:
        ``X (*batch, q, d)`` → ``(*batch)``.
    """

    def __init__(
        self,
        model,
        best_f,
        maximize: bool = True,
        num_samples: int = 512,
        seed: int = 0,
        tau_max: float = 1e-2,
        tau_relu: float = 1e-6,
        likelihood=None,
    ):
        super().__init__(model, best_f, maximize, num_samples, seed, likelihood)
        if tau_max <= 0 or tau_relu <= 0:
            raise InputError(f"qLogExpectedImprovement needs tau_max > 0 and tau_relu > 0; got {tau_max}, {tau_relu}.")
        self.tau_max, self.tau_relu = float(tau_max), float(tau_relu)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        log_improvement = log_softplus(self._improvement(X), self.tau_relu)  # (S, *batch, q)
        return logmeanexp(smooth_amax(log_improvement, self.tau_max, dim=-1), dim=0)


class qUpperConfidenceBound(MCAcquisitionFunction):
    r"""q-batch upper confidence bound (Wilson et al. 2017, "The reparameterization trick for acquisition functions").

    .. math:: \mathrm{qUCB}(X) = \mathbb E\big[\max_{j\le q}\ \mu_j + \sqrt{\beta\pi/2}\,|\xi_j - \mu_j|\big]

    For ``q = 1`` this equals the analytic :math:`\mu + \sqrt\beta\,\sigma`, since
    :math:`\mathbb E|\xi - \mu| = \sigma\sqrt{2/\pi}`. For ``maximize=False`` the mean is negated.

    Args:
        model: fitted single-output model in eval mode.
        beta: exploration weight β ≥ 0.
        maximize: maximise (default) or minimise the objective.
        num_samples: S, quasi-Monte Carlo samples.
        seed: seed of the fixed base samples.
        likelihood: optional; sample the noisy predictive.

    Shapes:
        ``X (*batch, q, d)`` → ``(*batch)``.
    """

    def __init__(self, model, beta, maximize: bool = True, num_samples: int = 512, seed: int = 0, likelihood=None):
        super().__init__(model, num_samples, seed, likelihood)
        if float(beta) < 0:
            raise InputError(f"qUpperConfidenceBound needs beta >= 0; got {beta}.")
        self.beta = float(beta)
        self.maximize = maximize

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        mu, xi = self._mean_and_samples(X)  # ξ - μ = Lε, centred on the exact posterior mean
        spread = math.sqrt(self.beta * math.pi / 2) * (xi - mu).abs()
        return ((mu if self.maximize else -mu) + spread).amax(dim=-1).mean(dim=0)
