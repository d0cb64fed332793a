r"""Analytic acquisition functions (one candidate per batch, ``q = 1``).

Each acquisition function is a :class:`torch.nn.Module` wrapping a fitted model in eval mode: an
:class:`~torchgp.models.ExactGP`, or any module whose ``model(X (t, d))`` returns the posterior
:class:`~torchgp.distributions.MultivariateNormal` over ``t`` points. Called on candidates
``X (*batch, 1, d)`` it returns one value per batch, ``(*batch)``, differentiable with respect to
``X`` by autograd, so :func:`torchgp.bo.optimize_acqf` can maximise it with L-BFGS-B.

With :math:`\mu, \sigma` the posterior mean and standard deviation at ``x``, ``f^*`` the incumbent
``best_f`` and :math:`z = (\mu - f^*)/\sigma` (for ``maximize=False``, :math:`z = (f^* - \mu)/\sigma`):

.. math::
    \mathrm{EI}(x) = \sigma\, h(z),\qquad h(z) = \varphi(z) + z\,\Phi(z)    \quad\text{(Jones et al. 1998, eq. 15)}

    \mathrm{PI}(x) = \Phi(z),\qquad \mathrm{UCB}(x) = \mu + \sqrt\beta\,\sigma \quad\text{(Srinivas et al. 2010)}

``LogExpectedImprovement`` evaluates :math:`\log\sigma + \log h(z)` without forming :math:`h(z)`,
which underflows to 0 in float64 below :math:`z \approx -38` (Ament et al. 2023, eq. 9).
"""

from __future__ import annotations

import torch
from torch import nn

from torchgp.bo.numerics import h, log_h, ndtr
from torchgp.bo.snapshot import active_snapshot
from torchgp.distributions import MultivariateNormal
from torchgp.errors import InputError, ModelTypeError, ShapeError

# Points per call of the model when the joint covariance of q-batches is needed (see ``posterior_moments``).
_MAX_JOINT_POINTS = 512


def as_float64(value) -> torch.Tensor:
    """A Python number or tensor as a float64 tensor (0.3 stored in float32 would be off by 1e-8); cast at use."""
    if not torch.is_tensor(value):
        return torch.tensor(value, dtype=torch.float64)
    return value.detach().to(torch.float64)


# --------------------------------------------------------------------------- model access
def check_eval_model(model) -> None:
    """Raise if ``model`` is not a module in eval mode (its posterior is only defined there)."""
    if not isinstance(model, nn.Module):
        raise ModelTypeError(
            f"Acquisition functions take a fitted torchgp model (an nn.Module); got {type(model).__name__}."
        )
    if model.training:
        raise InputError(
            f"{type(model).__name__} is in train mode, where it returns the prior at its training inputs. "
            "Call model.eval() (and likelihood.eval()) after fitting, before building acquisition functions "
            "or optimising them."
        )


def check_candidates(X, model, name: str) -> torch.Tensor:
    """``X (*batch, q, d)``: a floating tensor whose d matches the model's training inputs."""
    if not isinstance(X, torch.Tensor):
        raise TypeError(f"{name}: X must be a torch.Tensor of shape (*batch, q, d); got {type(X).__name__}.")
    if X.dim() < 2:
        raise ShapeError(
            f"{name}: X must have shape (*batch, q, d); got {tuple(X.shape)}. For a single point x of d features "
            "pass x.reshape(1, d)."
        )
    if not X.is_floating_point():
        raise TypeError(f"{name}: X must be a floating-point tensor; got {X.dtype}.")
    train_inputs = getattr(model, "train_inputs", None)
    if train_inputs:
        d = train_inputs[0].shape[-1]
        if X.shape[-1] != d:
            raise ShapeError(
                f"{name}: X has d = {X.shape[-1]} features (shape {tuple(X.shape)}) but the model was trained on "
                f"d = {d} (train_inputs {tuple(train_inputs[0].shape)}); pass X of shape (*batch, q, {d})."
            )
    return X


def _predict(model, likelihood, X_flat: torch.Tensor) -> MultivariateNormal:
    """The model's posterior (plus observation noise if ``likelihood``) at ``X_flat (t, d)``, checked to be ``(t,)``."""
    post = model(X_flat)
    if likelihood is not None:
        post = likelihood(post, X_flat)
    if not isinstance(post, MultivariateNormal):
        raise ModelTypeError(
            f"model(X) must return a torchgp MultivariateNormal in eval mode; got {type(post).__name__}."
        )
    t = X_flat.shape[0]
    if tuple(post.mean.shape) != (t,):
        raise ShapeError(
            f"model(X) with X of shape {tuple(X_flat.shape)} returned a posterior of shape {tuple(post.mean.shape)}; "
            f"acquisition functions need a single-output, non-batched model returning shape ({t},). If the model "
            "was called on batched inputs before, its cached posterior may still carry that batch: rebuild it or "
            "call set_train_data() to reset the cache."
        )
    return post


def posterior_moments(model, X: torch.Tensor, likelihood=None, joint: bool = False):
    """Posterior mean and (co)variance at every q-batch of candidates.

    The ``*batch`` dimensions are flattened into one call of the model on ``(batch · q, d)`` points,
    so the training covariance is factorised once, not once per batch element. For ``joint=True``
    the model is called on chunks of at most ``512`` points and the ``q × q`` diagonal blocks are cut out.
    Inside :func:`~torchgp.bo.snapshot.frozen_posterior` for ``model`` its closed-form snapshot answers instead.

    Args:
        model: a single-output model in eval mode.
        X: candidates ``(*batch, q, d)``.
        likelihood: if given, the predictive of observations ``likelihood(model(X), X)`` is used.
        joint: return the ``q × q`` covariance of each batch instead of the marginal variances.

    Returns:
        ``mean (*batch, q)`` and ``variance (*batch, q)`` (or ``covariance (*batch, q, q)`` if ``joint``).
    """
    snap = active_snapshot(model)
    if snap is not None and (likelihood is None or likelihood is model.likelihood):
        return snap.moments(X, observation_noise=likelihood is not None, joint=joint)
    batch, (q, d) = X.shape[:-2], X.shape[-2:]
    X_flat = X.reshape(-1, d)
    if not joint or q == 1:
        post = _predict(model, likelihood, X_flat)
        mean, var = post.mean.reshape(*batch, q), post.variance.reshape(*batch, q)
        return (mean, var.unsqueeze(-1)) if joint else (mean, var)
    b = X_flat.shape[0] // q
    chunk = max(1, _MAX_JOINT_POINTS // q)
    means, covs = [], []
    for start in range(0, b, chunk):
        c = min(chunk, b - start)
        post = _predict(model, likelihood, X_flat[start * q : (start + c) * q])
        C = post.covariance_matrix.reshape(c, q, c, q)
        covs.append(C.diagonal(dim1=0, dim2=2).permute(2, 0, 1))  # the c diagonal (q, q) blocks
        means.append(post.mean.reshape(c, q))
    return torch.cat(means).reshape(*batch, q), torch.cat(covs).reshape(*batch, q, q)


# --------------------------------------------------------------------------- base classes
class AcquisitionFunction(nn.Module):
    """Base class: holds the model (and optional likelihood) and checks inputs.

    Args:
        model: a fitted model in eval mode; ``model(X (t, d))`` returns a ``MultivariateNormal (t)``.
        likelihood: optional likelihood; if given, acquisition values use the predictive distribution
            of noisy observations ``likelihood(model(X))`` instead of the latent function's.

    Shapes:
        ``acqf(X (*batch, q, d))`` → ``(*batch)``.
    """

    def __init__(self, model, likelihood=None):
        super().__init__()
        check_eval_model(model)
        self.model = model
        self.likelihood = likelihood

    def _checked(self, X: torch.Tensor) -> torch.Tensor:
        check_eval_model(self.model)
        return check_candidates(X, self.model, type(self).__name__)


class AnalyticAcquisitionFunction(AcquisitionFunction):
    """Base of closed-form acquisition functions of the marginal posterior at one point (``q = 1``).

    Shapes:
        ``acqf(X (*batch, 1, d))`` → ``(*batch)``.
    """

    _q_version = "the q-batch (Monte Carlo) version from torchgp.bo.monte_carlo"

    def _mean_sigma(self, X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and standard deviation, each ``(*batch)``, at ``X (*batch, 1, d)``."""
        X = self._checked(X)
        if X.shape[-2] != 1:
            raise ShapeError(
                f"{type(self).__name__} is analytic and scores one point per batch: X must have shape "
                f"(*batch, 1, d); got {tuple(X.shape)} (q = {X.shape[-2]}). For joint batches of q > 1 points use "
                f"{self._q_version}, e.g. optimize_acqf(q{type(self).__name__}(model, ...), bounds, q={X.shape[-2]})."
            )
        mean, var = posterior_moments(self.model, X, self.likelihood)
        return mean.squeeze(-1), var.squeeze(-1).sqrt()


class _ImprovementBase(AnalyticAcquisitionFunction):
    """Shared ``best_f`` / ``maximize`` handling; ``z = ±(μ - f*)/σ``."""

    def __init__(self, model, best_f, maximize: bool = True, likelihood=None):
        super().__init__(model, likelihood)
        self.register_buffer("best_f", as_float64(best_f))
        self.maximize = maximize

    def _z_sigma(self, X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, sigma = self._mean_sigma(X)
        u = (mean - self.best_f.to(mean)) / sigma
        return (u if self.maximize else -u), sigma


# --------------------------------------------------------------------------- acquisition functions
class ExpectedImprovement(_ImprovementBase):
    r"""Expected improvement over ``best_f`` (Jones, Schonlau & Welch 1998, eq. 15).

    .. math:: \mathrm{EI}(x) = \mathbb E[\max(f(x) - f^*, 0)] = \sigma(x)\,[\varphi(z) + z\Phi(z)],
        \quad z = \frac{\mu(x) - f^*}{\sigma(x)}

    For ``maximize=False`` the improvement is :math:`\max(f^* - f(x), 0)`. EI underflows to exactly 0
    (zero gradient) far from the incumbent; prefer :class:`LogExpectedImprovement` for optimisation.

    Args:
        model: fitted model in eval mode.
        best_f: incumbent value ``f*``: a float or a tensor broadcastable to ``*batch``.
        maximize: maximise (default) or minimise the objective.
        likelihood: optional; use the noisy predictive ``likelihood(model(X))``.

    Shapes:
        ``X (*batch, 1, d)`` → ``(*batch)``.

    Example:
        >>> ei = ExpectedImprovement(model, best_f=train_y.max())  # doctest: +SKIP
        >>> ei(torch.rand(10, 1, d))  # (10,)  # doctest: +SKIP
    """

    _q_version = "qExpectedImprovement"

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        z, sigma = self._z_sigma(X)
        return sigma * h(z)


class LogExpectedImprovement(_ImprovementBase):
    r"""Logarithm of the expected improvement, numerically sound everywhere (Ament et al. 2023).

    .. math:: \log\mathrm{EI}(x) = \log\sigma(x) + \log h(z),\quad h(z) = \varphi(z) + z\Phi(z),

    with :math:`\log h` from :func:`log_h` (Ament et al. 2023, eq. 9), which stays finite, accurate and
    with an informative gradient (≈ :math:`-z`) far in the tail where EI itself is 0 in floating point.

    Args:
        model: fitted model in eval mode.
        best_f: incumbent value ``f*``: a float or a tensor broadcastable to ``*batch``.
        maximize: maximise (default) or minimise the objective.
        likelihood: optional; use the noisy predictive ``likelihood(model(X))``.

    Shapes:
        ``X (*batch, 1, d)`` → ``(*batch)``.
    """

    _q_version = "qLogExpectedImprovement"

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        z, sigma = self._z_sigma(X)
        return torch.log(sigma) + log_h(z)


class ProbabilityOfImprovement(_ImprovementBase):
    r"""Probability of improving on ``best_f`` (Kushner 1964): :math:`\mathrm{PI}(x) = \Phi(z)`.

    Args:
        model: fitted model in eval mode.
        best_f: incumbent value ``f*``: a float or a tensor broadcastable to ``*batch``.
        maximize: maximise (default) or minimise the objective.
        likelihood: optional; use the noisy predictive ``likelihood(model(X))``.

    Shapes:
        ``X (*batch, 1, d)`` → ``(*batch)``.
    """

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        z, _ = self._z_sigma(X)
        return ndtr(z)


class LogProbabilityOfImprovement(_ImprovementBase):
    r"""``log Φ(z)`` via ``torch.special.log_ndtr``: finite and informative where PI underflows.

    Args:
        model: fitted model in eval mode.
        best_f: incumbent value ``f*``: a float or a tensor broadcastable to ``*batch``.
        maximize: maximise (default) or minimise the objective.
        likelihood: optional; use the noisy predictive ``likelihood(model(X))``.

    Shapes:
        ``X (*batch, 1, d)`` → ``(*batch)``.
    """

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        z, _ = self._z_sigma(X)
        return torch.special.log_ndtr(z)


class UpperConfidenceBound(AnalyticAcquisitionFunction):
    r"""Upper confidence bound (GP-UCB, Srinivas et al. 2010): :math:`\mu(x) + \sqrt\beta\,\sigma(x)`.

    For ``maximize=False`` it returns :math:`-\mu(x) + \sqrt\beta\,\sigma(x)`, the negated lower
    confidence bound, so that larger is still better.

    Args:
        model: fitted model in eval mode.
        beta: exploration weight β ≥ 0 (the bound is ``√β`` standard deviations wide).
        maximize: maximise (default) or minimise the objective.
        likelihood: optional; use the noisy predictive ``likelihood(model(X))``.

    Shapes:
        ``X (*batch, 1, d)`` → ``(*batch)``.
    """

    _q_version = "qUpperConfidenceBound"

    def __init__(self, model, beta, maximize: bool = True, likelihood=None):
        super().__init__(model, likelihood)
        beta = as_float64(beta)
        if torch.any(beta < 0):
            raise InputError(f"UpperConfidenceBound needs beta >= 0; got {beta.tolist()}.")
        self.register_buffer("beta", beta)
        self.maximize = maximize

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        mean, sigma = self._mean_sigma(X)
        return (mean if self.maximize else -mean) + self.beta.to(mean).sqrt() * sigma


class PosteriorMean(AnalyticAcquisitionFunction):
    r"""The posterior mean :math:`\mu(x)` (negated if ``maximize=False``): pure exploitation.

    Args:
        model: fitted model in eval mode.
        maximize: maximise (default) or minimise the objective.
        likelihood: accepted for symmetry (observation noise does not change the mean).

    Shapes:
        ``X (*batch, 1, d)`` → ``(*batch)``.
    """

    def __init__(self, model, maximize: bool = True, likelihood=None):
        super().__init__(model, likelihood)
        self.maximize = maximize

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        mean, _ = self._mean_sigma(X)
        return mean if self.maximize else -mean
