r"""Binary GP classification by the Laplace approximation (Rasmussen & Williams 2006, §3.4, Algs. 3.1, 3.2, 5.1).

The latent function has a zero-mean GP prior ``f ~ N(0, K)`` and the labels ``t ∈ {0, 1}`` a
logistic likelihood ``p(t_i = 1 | f_i) = σ(f_i)``. The posterior ``p(f | t)`` is approximated by
``N(f̂, (K⁻¹ + W)⁻¹)`` at its mode ``f̂`` (Newton's method, Alg. 3.1), with ``W = diag(π(1 - π))``,
``π = σ(f̂)``. Everything is a pure function of the hyperparameters and the data: the mode is found
afresh on every call, from a warm start only when the caller passes one (``warm_start=``), and
nothing is stored on the model as a side effect.

Example:
    >>> import torch
    >>> X = torch.linspace(-2, 2, 20, dtype=torch.float64)[:, None]
    >>> model = LaplaceGPClassifier(X, (X[:, 0] > 0).double()).double()
    >>> value, f_hat = model.log_marginal_likelihood()
    >>> model.posterior(warm_start=f_hat).predict_proba(torch.tensor([[-1.5], [1.5]], dtype=torch.float64)).shape
    torch.Size([2])
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from torchgp import settings
from torchgp._state import state_key
from torchgp.distributions import MultivariateNormal
from torchgp.errors import InputError, ShapeError
from torchgp.kernels import RBFKernel, ScaleKernel
from torchgp.models.gp import GP, call_with_hooks
from torchgp.module import Module

__all__ = ["LaplaceGPClassifier", "LaplacePosterior", "LaplaceMarginalLogLikelihood"]


def _eye(n: int, like: torch.Tensor) -> torch.Tensor:
    return torch.eye(n, dtype=like.dtype, device=like.device)


class LaplacePosterior:
    """The Laplace posterior ``q(f | t) = N(f̂, (K⁻¹ + W)⁻¹)`` and its predictions (R&W Alg. 3.2).

    Computed from the hyperparameters of the moment; :meth:`LaplaceGPClassifier.posterior` builds a new
    one after they change.

    Args:
        model: the classifier.
        f_hat: the mode ``(n,)`` (from :meth:`LaplaceGPClassifier.mode`).

    Attributes:
        f_hat: the mode ``(n,)``.
        pi: ``σ(f̂) (n,)``.
        sqrt_W: ``W^½ (n,)``.
        L: ``chol(I + W^½ K W^½) (n, n)``.
    """

    def __init__(self, model: LaplaceGPClassifier, f_hat: torch.Tensor):
        with torch.no_grad():
            K = model.prior_covariance()
            self.model = model
            self.f_hat = f_hat.detach().to(K)
            self.pi = torch.sigmoid(self.f_hat)
            self.sqrt_W = (self.pi * (1 - self.pi)).sqrt()
            sW = self.sqrt_W
            self.L = torch.linalg.cholesky(_eye(K.shape[-1], K) + sW[:, None] * K * sW[None, :])  # B = I + W½KW½

    def latent(self, Xs: torch.Tensor) -> MultivariateNormal:
        r"""``q(f* | t)`` at ``Xs (t, d)``: mean ``k*ᵀ(t - π)`` and covariance ``K** - vᵀv`` (Alg. 3.2 lines 4-6).

        .. math:: v = L^{-1} W^{1/2} k_*
        """
        Xs = self.model._check_inputs(Xs)
        X, t = self.model.train_inputs[0], self.model.train_targets
        kernel = self.model.covar_module
        with torch.no_grad():
            K_sx = kernel(Xs, X).to_dense()
            mean = K_sx @ (t - self.pi)  # ∇ log p(t | f̂) = t - π
            v = torch.linalg.solve_triangular(self.L, self.sqrt_W[:, None] * K_sx.mT, upper=False)
            cov = kernel(Xs).to_dense() - v.mT @ v
        return MultivariateNormal(mean, cov)

    def predict_proba(self, Xs: torch.Tensor) -> torch.Tensor:
        r"""``P(t* = 1 | x*, t)`` at ``Xs (t, d)`` → ``(t,)``.

        The average of ``σ(f*)`` over ``q(f*)`` uses MacKay's (1992) probit approximation
        (R&W eq. 3.25 with ``σ(z) ≈ Φ(z √(π/8))``):

        .. math:: \bar\pi_* \approx \sigma\!\left(\bar f_* / \sqrt{1 + \pi\, \mathbb{V}[f_*] / 8}\right)
        """
        Xs = self.model._check_inputs(Xs)
        X, t = self.model.train_inputs[0], self.model.train_targets
        kernel = self.model.covar_module
        with torch.no_grad():
            K_sx = kernel(Xs, X).to_dense()
            mean = K_sx @ (t - self.pi)
            v = torch.linalg.solve_triangular(self.L, self.sqrt_W[:, None] * K_sx.mT, upper=False)
            var = (kernel(Xs, diag=True) - v.pow(2).sum(-2)).clamp_min(0)
            return torch.sigmoid(mean / torch.sqrt(1 + math.pi * var / 8))


class LaplaceGPClassifier(GP):
    """Binary GP classifier: zero-mean GP prior, logistic likelihood, Laplace-approximate posterior.

    Args:
        train_x: ``X (n, d)`` (or ``(n,)``) training inputs.
        train_y: ``t (n,)`` labels in {0, 1}.
        covar_module: the prior covariance (default ``ScaleKernel(RBFKernel(ard_num_dims=d))``).
        max_newton: Newton iterations at most when finding the mode.
        tol: Newton stops when ``max |Δf| < tol · max(1, max |f|)``.

    Shapes:
        train mode: ``model(X)`` → the prior ``MultivariateNormal`` ``(n,)``; eval mode:
        ``model(X* (t, d))`` → the latent posterior ``q(f*)`` ``(t,)``.

    Raises:
        ShapeError: inputs or labels of the wrong shape.
        InputError: labels other than 0 and 1.
    """

    def __init__(self, train_x, train_y, covar_module=None, max_newton: int = 100, tol: float = 1e-9):
        super().__init__()
        X = train_x.unsqueeze(-1) if train_x.dim() == 1 else train_x
        if X.dim() != 2 or train_y.shape != X.shape[:1]:
            raise ShapeError(
                f"LaplaceGPClassifier needs X of shape (n, d) and labels of shape (n,); got X {tuple(train_x.shape)}"
                f" and labels {tuple(train_y.shape)}. Fit a batch of problems as separate models."
            )
        if not torch.all((train_y == 0) | (train_y == 1)):
            raise InputError("LaplaceGPClassifier needs labels in {0, 1}; map the two classes to 0 and 1 first.")
        self.train_inputs = (X,)
        self.train_targets = train_y.to(X.dtype) if X.is_floating_point() else train_y
        self.covar_module = ScaleKernel(RBFKernel(ard_num_dims=X.shape[-1])) if covar_module is None else covar_module
        self.max_newton = int(max_newton)
        self.tol = float(tol)
        self._cache = None

    def _apply(self, fn, *args, **kwargs):
        out = super()._apply(fn, *args, **kwargs)  # .double() / .to(...) reach the training data too
        self.train_inputs = tuple(fn(x) for x in self.train_inputs)
        self.train_targets = fn(self.train_targets)
        return out

    def _check_inputs(self, Xs: torch.Tensor) -> torch.Tensor:
        Xs = Xs.unsqueeze(-1) if Xs.dim() == 1 else Xs
        d = self.train_inputs[0].shape[-1]
        if Xs.dim() != 2 or Xs.shape[-1] != d:
            raise ShapeError(f"test inputs must have shape (t, {d}) like the training inputs; got {tuple(Xs.shape)}.")
        return Xs

    # ------------------------------------------------------------------ the maths
    def prior_covariance(self) -> torch.Tensor:
        """``K (n, n)`` at the training inputs, plus the ``settings.cholesky_jitter`` of its dtype."""
        K = self.covar_module(self.train_inputs[0]).to_dense()
        return K + settings.cholesky_jitter.value(K.dtype) * _eye(K.shape[-1], K)

    def _newton_step(self, K: torch.Tensor, f: torch.Tensor):
        """One Newton step from ``f`` (R&W Alg. 3.1 lines 4-8): ``(f_new, a, L)`` with ``f_new = K a``."""
        t = self.train_targets
        pi = torch.sigmoid(f)
        W = pi * (1 - pi)  # -∇∇ log p(t | f) for the logistic likelihood (R&W eq. 3.15)
        sW = W.sqrt()
        L = torch.linalg.cholesky(_eye(K.shape[-1], K) + sW[:, None] * K * sW[None, :])  # B = I + W½KW½
        b = W * f + (t - pi)
        v = torch.cholesky_solve((sW * (K @ b)).unsqueeze(-1), L).squeeze(-1)
        a = b - sW * v
        return K @ a, a, L

    def mode(self, warm_start: torch.Tensor | None = None, K: torch.Tensor | None = None) -> torch.Tensor:
        """The mode ``f̂ (n,)`` of ``p(f | t)`` by Newton's method (R&W Alg. 3.1), from ``warm_start`` or 0.

        No gradient flows through it; the model is not modified.
        """
        with torch.no_grad():
            K = self.prior_covariance() if K is None else K.detach()
            n = K.shape[-1]
            f = warm_start
            if f is None or f.shape != (n,) or not torch.all(torch.isfinite(f)):
                f = torch.zeros(n, dtype=K.dtype, device=K.device)
            f = f.to(K)
            for _ in range(self.max_newton):
                f_new = self._newton_step(K, f)[0]
                done = float((f_new - f).abs().max()) < self.tol * max(1.0, float(f_new.abs().max()))
                f = f_new
                if done:
                    break
            return f

    def log_marginal_likelihood(self, warm_start: torch.Tensor | None = None):
        r"""The Laplace approximation of ``log p(t | X, θ)`` and the mode (R&W Alg. 3.1 line 10, eq. 3.32).

        .. math:: \log q(t | X) = -\tfrac12 a^\top \hat f + \sum_i \log p(t_i | \hat f_i) - \sum_i \log L_{ii}

        Its gradient is exact (R&W Alg. 5.1): autograd runs through one Newton step from the detached
        mode, and the Newton map's derivative in ``f`` vanishes at the mode, so that step carries the
        implicit derivative ``df̂/dθ`` besides the explicit one.

        Returns:
            ``(value, f_hat)``: a scalar with gradients to the hyperparameters, and the mode ``(n,)``
            (pass it back as ``warm_start`` to start the next Newton search there).
        """
        K = self.prior_covariance()
        f_hat = self.mode(warm_start, K)
        f, a, _ = self._newton_step(K, f_hat)  # f = f̂ in value; its derivative is df̂/dθ
        pi = torch.sigmoid(f)
        sW = (pi * (1 - pi)).sqrt()  # W at f (not at the detached f̂): log|B| carries the implicit term
        L = torch.linalg.cholesky(_eye(K.shape[-1], K) + sW[:, None] * K * sW[None, :])
        signs = 2 * self.train_targets - 1
        value = -0.5 * (a * f).sum() + F.logsigmoid(signs * f).sum() - L.diagonal().log().sum()
        return value, f_hat

    def posterior(self, warm_start: torch.Tensor | None = None) -> LaplacePosterior:
        """The Laplace posterior at the current hyperparameters (its mode found from ``warm_start``)."""
        return LaplacePosterior(self, self.mode(warm_start))

    # ------------------------------------------------------------------ calling the model
    def forward(self, x: torch.Tensor) -> MultivariateNormal:
        """The prior ``N(0, K(x))`` ``(n,)`` at ``x (n, d)``."""
        K = self.covar_module(x)
        return MultivariateNormal(torch.zeros(x.shape[:-1], dtype=x.dtype, device=x.device), K)

    def __call__(self, x: torch.Tensor):
        """Train mode: the prior at ``x``; eval mode: the latent posterior ``q(f(x) | t)``."""
        return call_with_hooks(self, self._dispatch, (self._check_inputs(x),), {})

    def _dispatch(self, x):
        if self.training:
            return self.forward(x)
        key = state_key(self, *self.train_inputs, self.train_targets)
        if self._cache is None or self._cache[0] != key:  # keyed on every value: never stale
            self._cache = (key, self.posterior())
        return self._cache[1].latent(x)


class LaplaceMarginalLogLikelihood(Module):
    """The training objective ``log q(t | X, θ) / n`` of a :class:`LaplaceGPClassifier`, for :func:`torchgp.fit`.

    ``mll(model(X), t)`` evaluates the model's :meth:`~LaplaceGPClassifier.log_marginal_likelihood`.
    Successive evaluations start Newton's method from the previous mode, which this objective
    (not the model) keeps in ``warm_start``; the value does not depend on it beyond Newton's tolerance.

    Args:
        model: the classifier.
    """

    def __init__(self, model: LaplaceGPClassifier):
        super().__init__()
        self.model = model
        self.warm_start = None

    def forward(self, output=None, target=None):
        """``log q(t | X) / n`` (a scalar); ``output`` and ``target`` are the model's own and are not used."""
        value, self.warm_start = self.model.log_marginal_likelihood(self.warm_start)
        return value / self.model.train_targets.shape[-1]
