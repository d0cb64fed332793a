"""``GaussianProcessRegressor``: exact GP regression (SVGP above ``variational_threshold`` points) as a scikit-learn estimator."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data

from torchgp import settings
from torchgp.distributions import MultivariateNormal
from torchgp.kernels.parse import init_from_data as _init_from_data
from torchgp.mlls import ExactMarginalLogLikelihood
from torchgp.models.builders import ApproximateGPModel, ExactGPModel
from torchgp.models.exact_gp import ExactGP
from torchgp.sklearn._common import (
    _build_kernel,
    _dtype,
    _fit_result,
    _fit_standardized,
    _fitted_state,
    _Normalizer,
    _params_state,
    _restore,
    _seed,
)
from torchgp.sklearn._multioutput import (
    check_multioutput,
    fit_multioutput,
    multioutput_file_state,
    predict_multioutput,
    restore_multioutput,
    sample_multioutput,
)

__all__ = ["GaussianProcessRegressor"]


class GaussianProcessRegressor(RegressorMixin, BaseEstimator):
    """GP regression with hyperparameters fitted by maximising the marginal likelihood.

    Args:
        kernel: a torchgp kernel (copied, never modified) or a kernel string; default ``"rbf"``
            (``ScaleKernel(RBF)`` with one lengthscale per feature). Observation noise is always
            learned by a Gaussian likelihood (no ``WhiteKernel`` needed).
        mean: ``"constant"`` (learned), ``"zero"`` or ``"linear"``.
        normalize_y: standardise y before fitting (predictions are mapped back).
        n_restarts_optimizer: extra optimiser starts from perturbed values; the best is kept.
        optimizer: ``"L-BFGS-B"`` or a ``torch.optim`` name (see :func:`torchgp.fit`).
        max_iter: optimiser iterations per start.
        noise_lower_bound: smallest learnable noise variance (of the normalised y).
        include_noise: ``predict``/``sample_y`` describe noisy observations y (True, like scikit-learn
            with a ``WhiteKernel``) or the latent function f (False).
        random_state: seed of the restarts, the inducing points and ``sample_y``.
        dtype: ``"float64"`` (default) or ``"float32"``.
        variational_threshold: above this many training points a variational (SVGP) model is fitted
            instead, if torchgp's variational part is installed.
        num_inducing: inducing points of the variational model.
        progress: show a progress bar while fitting.
        multioutput: for ``y (n, t)`` with ``t > 1``: ``"independent"`` (one GP per output, each with its own
            hyperparameters and noise) or ``"icm"`` (one intrinsic coregionalisation model, ``K_x ⊗ B``, whose
            task covariance ``B`` of rank ``icm_rank`` correlates the outputs). Multi-output fits are exact.
        icm_rank: rank of the ICM's task covariance, ``1 ≤ icm_rank ≤ t``.

    Attributes:
        model_: the fitted torchgp model (``ExactGPModel`` or ``ApproximateGPModel``).
        kernel_: its kernel, with the fitted hyperparameters.
        log_marginal_likelihood_value_: log marginal likelihood (ELBO for the variational model) of
            the (normalised) training targets at the fitted hyperparameters.
        fit_result_: the :class:`~torchgp.optim.fit.FitResult`.
        n_iter_: optimiser iterations.
        n_outputs_: number of outputs t (1 for a 1-D ``y``).

    Shapes:
        ``fit(X (n, d), y (n,))``; ``predict(X* (m, d))`` → ``(m,)`` (``std (m,)``, ``cov (m, m)``).
        ``fit(X (n, d), y (n, t))``; ``predict(X* (m, d))`` → ``(m, t)`` (``std (m, t)``, ``cov (m, m, t)``);
        ``sample_y`` → ``(m, t, n_samples)``; ``score`` is the mean R² over the outputs.
    """

    def __init__(
        self,
        kernel=None,
        *,
        mean="constant",
        normalize_y=True,
        n_restarts_optimizer=0,
        optimizer="L-BFGS-B",
        max_iter=1000,
        noise_lower_bound=1e-6,
        include_noise=True,
        random_state=None,
        dtype="float64",
        variational_threshold=5000,
        num_inducing=512,
        progress=False,
        multioutput="independent",
        icm_rank=1,
    ):
        self.kernel = kernel
        self.mean = mean
        self.normalize_y = normalize_y
        self.n_restarts_optimizer = n_restarts_optimizer
        self.optimizer = optimizer
        self.max_iter = max_iter
        self.noise_lower_bound = noise_lower_bound
        self.include_noise = include_noise
        self.random_state = random_state
        self.dtype = dtype
        self.variational_threshold = variational_threshold
        self.num_inducing = num_inducing
        self.progress = progress
        self.multioutput = multioutput
        self.icm_rank = icm_rank

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        tags.target_tags.multi_output = True
        return tags

    # ------------------------------------------------------------------ fitting
    def fit(self, X, y):
        """Fit the hyperparameters on ``X (n, d)``, ``y (n,)`` or ``(n, t)``; returns ``self``."""
        from torchgp.constraints import GreaterThan
        from torchgp.likelihoods import GaussianLikelihood

        X, y = validate_data(self, X, y, y_numeric=True, multi_output=True, dtype=np.float64)
        dtype = _dtype(self.dtype)
        check_multioutput(self)
        y = y[:, 0] if y.ndim == 2 and y.shape[1] == 1 else y
        if y.ndim == 2:
            return fit_multioutput(self, X, y, dtype)
        self.n_outputs_ = 1
        self._y_norm = _Normalizer(y, self.normalize_y)
        Xt = torch.tensor(X, dtype=dtype)
        yt = torch.tensor((y - self._y_norm.mean) / self._y_norm.std, dtype=dtype)
        n, d = Xt.shape
        kernel = _build_kernel(self.kernel, d, dtype)
        _init_from_data(kernel, Xt, float(yt.var()) if n > 1 else 1.0)
        likelihood = GaussianLikelihood(noise_constraint=GreaterThan(self.noise_lower_bound)).to(dtype)
        likelihood.noise = max(0.1 * float(yt.var()) if n > 1 else 0.1, 2 * self.noise_lower_bound)
        seed = _seed(self.random_state)
        approx = ApproximateGPModel if n > self.variational_threshold else None
        if approx is None:
            model = ExactGPModel(Xt, yt, likelihood, kernel=kernel, mean=self.mean).to(dtype)
            mll = ExactMarginalLogLikelihood(likelihood, model)
            result = _fit_standardized(
                kernel,
                Xt,
                mll,
                self.optimizer,
                maxiter=self.max_iter,
                restarts=self.n_restarts_optimizer,
                seed=seed,
                progress=self.progress,
            )
            model.train()
            with torch.no_grad():
                self.log_marginal_likelihood_value_ = float(mll(model(Xt), yt)) * n
        else:
            model, result, value = self._fit_variational(approx, Xt, yt, kernel, likelihood, seed)
            self.log_marginal_likelihood_value_ = value
        model.eval()
        likelihood.eval()
        self.model_, self.likelihood_, self.kernel_, self.fit_result_ = model, likelihood, model.covar_module, result
        self.n_iter_ = max(1, result.iterations)
        return self

    def _fit_variational(self, approx, Xt, yt, kernel, likelihood, seed):
        from torch.utils.data import DataLoader, TensorDataset

        from torchgp.mlls import VariationalELBO

        n = Xt.shape[0]
        gen = torch.Generator().manual_seed(seed)
        Z = Xt[torch.randperm(n, generator=gen)[: self.num_inducing]].clone()
        model = approx(Z, kernel=kernel, mean=self.mean).to(Xt.dtype)
        mll = VariationalELBO(likelihood, model, num_data=n)
        loader = DataLoader(TensorDataset(Xt, yt), batch_size=1024, shuffle=True, generator=gen)
        optimizer = "adam" if self.optimizer == "L-BFGS-B" else self.optimizer
        epochs = max(1, min(self.max_iter, 50))
        with torch.random.fork_rng(devices=[]):  # q(u)'s initial noise: reproducible from random_state
            torch.manual_seed(seed)
            result = _fit_standardized(
                kernel, Xt, mll, optimizer, data=loader, maxiter=epochs, lr=0.01, seed=seed, progress=self.progress
            )
        model.train()
        likelihood.train()
        with torch.no_grad():
            value = float(mll(model(Xt), yt)) * n
        return model, result, value

    # ------------------------------------------------------------------ prediction
    def _predictive(self, X) -> MultivariateNormal:
        check_is_fitted(self, "model_")
        X = validate_data(self, X, reset=False, dtype=np.float64)
        Xt = torch.tensor(X, dtype=_dtype(self.dtype))
        # predicting at the training inputs is intended here (score(X_train, y_train)): no debug warning
        with torch.no_grad(), settings.debug(False):
            f = self.model_(Xt)
            return self.likelihood_(f) if self.include_noise else f

    def predict(self, X, return_std=False, return_cov=False):
        """Predictive mean at ``X (t, d)``, optionally with the standard deviation or covariance.

        Returns:
            ``mean (t,)``; ``(mean, std (t,))`` with ``return_std``; ``(mean, cov (t, t))`` with ``return_cov``.
        """
        if return_std and return_cov:
            raise ValueError("predict: ask for at most one of return_std and return_cov.")
        check_is_fitted(self, "model_")
        s, m = self._y_norm.std, self._y_norm.mean
        with torch.no_grad():  # the predictive covariance is evaluated lazily, so keep the block around it
            dist = self._predictive(X)
            if getattr(self, "n_outputs_", 1) > 1:
                return predict_multioutput(self, dist, return_std, return_cov)
            mean = dist.mean.detach().cpu().numpy().astype(np.float64) * s + m
            if return_cov:
                return mean, dist.covariance_matrix.detach().cpu().numpy().astype(np.float64) * s**2
            if return_std:
                var = dist.variance.detach().clamp_min(0).cpu().numpy().astype(np.float64)
                return mean, np.sqrt(var) * s
        return mean

    def sample_y(self, X, n_samples=1, random_state=0):
        """Joint draws from the predictive distribution at ``X (m, d)``; returns ``(m, n_samples)``
        (``(m, t, n_samples)`` for ``t`` outputs)."""
        rng = check_random_state(random_state)
        if getattr(self, "n_outputs_", 1) > 1:
            with torch.no_grad():
                return sample_multioutput(self, self._predictive(X), n_samples, rng)
        mean, cov = self.predict(X, return_cov=True)
        jitter = 1e-10 * max(float(np.mean(np.diag(cov))), 1e-300)
        eigval, eigvec = np.linalg.eigh(cov + jitter * np.eye(len(mean)))
        root = eigvec * np.sqrt(np.clip(eigval, 0, None))
        return mean[:, None] + root @ rng.standard_normal((len(mean), n_samples))

    def log_marginal_likelihood(self) -> float:
        """The fitted model's log marginal likelihood (see ``log_marginal_likelihood_value_``)."""
        check_is_fitted(self, "model_")
        return self.log_marginal_likelihood_value_

    # ------------------------------------------------------------------ saving
    def _torchgp_file_state(self):
        """``(JSON state, torch parts, arrays)`` for :func:`torchgp.save` (no pickle)."""
        import dataclasses

        check_is_fitted(self, "model_")
        params, modules = _params_state(self)
        modules["model"] = self.model_
        exact = isinstance(self.model_, ExactGP)
        if not exact:
            modules["likelihood"] = self.likelihood_
        multi = getattr(self, "n_outputs_", 1) > 1
        fitted = {
            **_fitted_state(self),
            "y_mean": 0.0 if multi else self._y_norm.mean,
            "y_std": 1.0 if multi else self._y_norm.std,
            "fit_result_": dataclasses.asdict(self.fit_result_),
        }
        if multi:
            fitted["multioutput"] = multioutput_file_state(self)
        return {"params": params, "fitted": fitted}, modules, {}

    @classmethod
    def _from_torchgp_file(cls, state: dict, parts: dict, arrays: dict):
        est = _restore(cls, state, parts)
        fitted = state["fitted"]
        est._y_norm = _Normalizer.__new__(_Normalizer)
        est._y_norm.mean, est._y_norm.std = fitted["y_mean"], fitted["y_std"]
        est.model_ = parts["model"]
        est.likelihood_ = parts["likelihood"] if "likelihood" in parts else est.model_.likelihood
        est.kernel_ = est.model_.covar_module
        est.fit_result_ = _fit_result(fitted["fit_result_"])
        est.n_outputs_ = 1
        if "multioutput" in fitted:
            restore_multioutput(est, fitted["multioutput"])
        return est
