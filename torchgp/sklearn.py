r"""scikit-learn estimators over torchgp: :class:`GaussianProcessRegressor` and :class:`GaussianProcessClassifier`.

They follow scikit-learn's conventions (``fit`` / ``predict(return_std=True)`` / ``predict_proba``,
``clone``, ``Pipeline``, ``GridSearchCV``, pickling) and pass ``check_estimator``; hyperparameters
are fitted with :func:`torchgp.fit` (L-BFGS-B on autograd gradients, float64 by default; Adam on
minibatches of the ELBO for the variational models used above ``variational_threshold`` points).
Fitted estimators are saved without pickle by ``torchgp.save(estimator, path)`` and come back from
``torchgp.load(path)``. Kernels are torchgp kernels or short strings (``"rbf + periodic * rbf"``, see
:mod:`torchgp.kernels.parse`). Needs scikit-learn (``pip install scikit-learn``).

Example:
    >>> import numpy as np
    >>> from torchgp.sklearn import GaussianProcessRegressor
    >>> X = np.linspace(0, 1, 30)[:, None]
    >>> gpr = GaussianProcessRegressor("rbf", random_state=0).fit(X, np.sin(6 * X[:, 0]))
    >>> mean, std = gpr.predict(X[:3], return_std=True)
    >>> mean.shape, std.shape
    ((3,), (3,))
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch

try:
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
    from sklearn.utils import check_random_state
    from sklearn.utils.multiclass import check_classification_targets
    from sklearn.utils.validation import check_is_fitted, validate_data
except ImportError as err:  # pragma: no cover - exercised only without scikit-learn
    raise ImportError(
        "torchgp.sklearn needs scikit-learn >= 1.6: pip install 'scikit-learn>=1.6' (or pip install torchgp[sklearn])."
    ) from err

from torchgp import settings
from torchgp.distributions import MultivariateNormal
from torchgp.io import ExactGPModel, _approximate_gp_model_class
from torchgp.kernels import Kernel
from torchgp.kernels.parse import init_from_data as _init_from_data
from torchgp.kernels.parse import parse_kernel
from torchgp.mlls import ExactMarginalLogLikelihood
from torchgp.module import Module
from torchgp.optim.fit import fit as _fit

__all__ = ["GaussianProcessRegressor", "GaussianProcessClassifier", "EXPECTED_FAILED_CHECKS"]

#: ``check_estimator`` checks that cannot apply, by estimator class name, with the reason.
#: (Empty: every check applies and passes.)
EXPECTED_FAILED_CHECKS: dict[str, dict[str, str]] = {"GaussianProcessRegressor": {}, "GaussianProcessClassifier": {}}

_DTYPES = {"float64": torch.float64, "float32": torch.float32}


def _dtype(name) -> torch.dtype:
    if name not in _DTYPES:
        raise ValueError(f"dtype must be 'float64' or 'float32'; got {name!r}.")
    return _DTYPES[name]


def _seed(random_state) -> int:
    return int(check_random_state(random_state).randint(2**31 - 1))


def _build_kernel(kernel, d: int, dtype) -> Kernel:
    if kernel is None:
        kernel = "rbf"
    if isinstance(kernel, Kernel):
        return copy.deepcopy(kernel).to(dtype)  # never modify the estimator's parameter in place
    if isinstance(kernel, str):
        return parse_kernel(kernel, ard_num_dims=d).to(dtype)
    raise ValueError(f"kernel must be a torchgp Kernel or a kernel string such as 'rbf + periodic'; got {kernel!r}.")


class _Normalizer:
    """``y → (y - mean) / std`` (identity when disabled or std is 0)."""

    def __init__(self, y: np.ndarray, enabled: bool):
        self.mean = float(np.mean(y)) if enabled else 0.0
        std = float(np.std(y)) if enabled else 1.0
        self.std = std if enabled and std > 0 and math.isfinite(std) else 1.0


# =========================================================================== saving (torchgp.save / torchgp.load)
def _params_state(est) -> tuple[dict, dict]:
    """``get_params()`` as JSON plus the torch modules among them (a kernel object)."""
    from torchgp.errors import InputError

    params, modules = {}, {}
    for name, value in est.get_params(deep=False).items():
        if isinstance(value, Kernel):
            modules[f"param_{name}"] = value
            value = {"part": f"param_{name}"}
        elif name == "random_state" and not (value is None or isinstance(value, (int, np.integer))):
            raise InputError(f"save: random_state must be an int or None to be saved; got {type(value).__name__}.")
        elif isinstance(value, np.integer | np.floating):
            value = value.item()
        params[name] = value
    return params, modules


def _fitted_state(est) -> dict:
    state = {
        "n_features_in_": int(est.n_features_in_),
        "n_iter_": int(est.n_iter_),
        "log_marginal_likelihood_value_": float(est.log_marginal_likelihood_value_),
    }
    if hasattr(est, "feature_names_in_"):
        state["feature_names_in_"] = [str(f) for f in est.feature_names_in_]
    return state


def _restore(cls, state: dict, parts: dict):
    params = {k: (parts[v["part"]] if isinstance(v, dict) and "part" in v else v) for k, v in state["params"].items()}
    est = cls(**params)
    for key in ("n_features_in_", "n_iter_", "log_marginal_likelihood_value_"):
        setattr(est, key, state["fitted"][key])
    if "feature_names_in_" in state["fitted"]:
        est.feature_names_in_ = np.asarray(state["fitted"]["feature_names_in_"], dtype=object)
    return est


def _fit_result(d: dict):
    from torchgp.optim.fit import FitResult

    return FitResult(**d)


# =========================================================================== regression
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

    Attributes:
        model_: the fitted torchgp model (``ExactGPModel`` or ``ApproximateGPModel``).
        kernel_: its kernel, with the fitted hyperparameters.
        log_marginal_likelihood_value_: log marginal likelihood (ELBO for the variational model) of
            the (normalised) training targets at the fitted hyperparameters.
        fit_result_: the :class:`~torchgp.optim.fit.FitResult`.
        n_iter_: optimiser iterations.

    Shapes:
        ``fit(X (n, d), y (n,))``; ``predict(X* (t, d))`` → ``(t,)`` (``std (t,)``, ``cov (t, t)``).
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

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        tags.target_tags.multi_output = False
        return tags

    # ------------------------------------------------------------------ fitting
    def fit(self, X, y):
        """Fit the hyperparameters on ``X (n, d)``, ``y (n,)``; returns ``self``."""
        from torchgp.constraints import GreaterThan
        from torchgp.likelihoods import GaussianLikelihood

        X, y = validate_data(self, X, y, y_numeric=True, dtype=np.float64)
        dtype = _dtype(self.dtype)
        self._y_norm = _Normalizer(y, self.normalize_y)
        Xt = torch.tensor(X, dtype=dtype)
        yt = torch.tensor((y - self._y_norm.mean) / self._y_norm.std, dtype=dtype)
        n, d = Xt.shape
        kernel = _build_kernel(self.kernel, d, dtype)
        _init_from_data(kernel, Xt, float(yt.var()) if n > 1 else 1.0)
        likelihood = GaussianLikelihood(noise_constraint=GreaterThan(self.noise_lower_bound)).to(dtype)
        likelihood.noise = max(0.1 * float(yt.var()) if n > 1 else 0.1, 2 * self.noise_lower_bound)
        seed = _seed(self.random_state)
        approx = _approximate_gp_model_class() if n > self.variational_threshold else None
        if approx is None:
            model = ExactGPModel(Xt, yt, likelihood, kernel=kernel, mean=self.mean).to(dtype)
            mll = ExactMarginalLogLikelihood(likelihood, model)
            result = _fit(
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
            result = _fit(mll, optimizer, data=loader, maxiter=epochs, lr=0.01, seed=seed, progress=self.progress)
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
        with torch.no_grad():
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
            mean = dist.mean.detach().cpu().numpy().astype(np.float64) * s + m
            if return_cov:
                return mean, dist.covariance_matrix.detach().cpu().numpy().astype(np.float64) * s**2
            if return_std:
                var = dist.variance.detach().clamp_min(0).cpu().numpy().astype(np.float64)
                return mean, np.sqrt(var) * s
        return mean

    def sample_y(self, X, n_samples=1, random_state=0):
        """Joint draws from the predictive distribution at ``X (t, d)``; returns ``(t, n_samples)``."""
        mean, cov = self.predict(X, return_cov=True)
        rng = check_random_state(random_state)
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
        exact = isinstance(self.model_, ExactGPModel)
        if not exact:
            modules["likelihood"] = self.likelihood_
        fitted = {
            **_fitted_state(self),
            "y_mean": self._y_norm.mean,
            "y_std": self._y_norm.std,
            "fit_result_": dataclasses.asdict(self.fit_result_),
        }
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
        return est


# =========================================================================== classification
class _LaplaceGP(Module):
    """Binary GP classification by the Laplace approximation (R&W 2006, Algs. 3.1, 3.2, 5.1).

    The model has a zero mean and a logistic likelihood. ``forward`` returns the approximate log
    marginal likelihood divided by n; its gradient is exact: autograd runs through one Newton step
    from the (detached) mode, and the Newton map's derivative with respect to ``f`` vanishes at the
    mode, so that step's derivative with respect to θ is the implicit derivative ``df̂/dθ``.

    Shapes:
        ``train_inputs ((n, d),)``, ``train_targets (n,)`` in {0, 1}.
    """

    def __init__(self, X: torch.Tensor, t: torch.Tensor, kernel: Kernel):
        super().__init__()
        self.train_inputs = (X,)
        self.train_targets = t
        self.covar_module = kernel
        self.f_hat = None

    def _K(self):
        X = self.train_inputs[0]
        K = self.covar_module(X).to_dense()
        return K + settings.cholesky_jitter.value(K.dtype) * torch.eye(K.shape[-1], dtype=K.dtype)

    def _newton_step(self, K, f):
        t = self.train_targets
        pi = torch.sigmoid(f)
        W = pi * (1 - pi)
        sW = W.sqrt()
        B = torch.eye(K.shape[-1], dtype=K.dtype) + sW[:, None] * K * sW[None, :]
        L = torch.linalg.cholesky(B)
        b = W * f + (t - pi)
        v = torch.cholesky_solve((sW * (K @ b)).unsqueeze(-1), L).squeeze(-1)
        a = b - sW * v
        return K @ a, a

    def _objective(self, K, f, a):
        y_pm = 2 * self.train_targets - 1
        pi = torch.sigmoid(f)
        sW = (pi * (1 - pi)).sqrt()
        B = torch.eye(K.shape[-1], dtype=K.dtype) + sW[:, None] * K * sW[None, :]
        L = torch.linalg.cholesky(B)
        return -0.5 * (a * f).sum() + torch.nn.functional.logsigmoid(y_pm * f).sum() - L.diagonal().log().sum()

    def mode(self, K, max_newton: int = 100, tol: float = 1e-9):
        """The mode f̂ of p(f | y) by Newton's method (R&W Alg. 3.1), warm-started from the last one."""
        f = self.f_hat
        if f is None or f.shape[-1] != K.shape[-1] or not torch.all(torch.isfinite(f)):
            f = torch.zeros(K.shape[-1], dtype=K.dtype)
        for _ in range(max_newton):
            f_new, _ = self._newton_step(K, f)
            converged = float((f_new - f).abs().max()) < tol * max(1.0, float(f_new.abs().max()))
            f = f_new
            if converged:
                break
        return f

    def forward(self, *inputs):
        K = self._K()
        with torch.no_grad():
            f_hat = self.mode(K.detach())
        self.f_hat = f_hat
        f, a = self._newton_step(K, f_hat)  # differentiable step: carries df̂/dθ
        return self._objective(K, f, a) / K.shape[-1]

    def predict_proba(self, Xs: torch.Tensor) -> torch.Tensor:
        """``P(y = 1 | x*)`` for ``Xs (t, d)`` → ``(t,)`` (R&W Alg. 3.2 with the probit approximation)."""
        with torch.no_grad():
            X = self.train_inputs[0]
            K = self._K()
            f = self.mode(K)
            pi = torch.sigmoid(f)
            sW = (pi * (1 - pi)).sqrt()
            B = torch.eye(K.shape[-1], dtype=K.dtype) + sW[:, None] * K * sW[None, :]
            L = torch.linalg.cholesky(B)
            K_sx = self.covar_module(Xs, X).to_dense()
            mu = K_sx @ (self.train_targets - pi)
            V = torch.linalg.solve_triangular(L, (sW[:, None] * K_sx.mT), upper=False)
            var = (self.covar_module(Xs, diag=True) - V.pow(2).sum(-2)).clamp_min(0)
            # MacKay's probit approximation of ∫ σ(f) N(f; μ, s²) df
            return torch.sigmoid(mu / torch.sqrt(1 + math.pi * var / 8))


class _LaplaceObjective(Module):
    """``torchgp.fit``-compatible wrapper: ``objective(model(X), y)`` is the Laplace log marginal / n."""

    def __init__(self, model: _LaplaceGP):
        super().__init__()
        self.model = model

    def forward(self, value, target=None):
        return value


class GaussianProcessClassifier(ClassifierMixin, BaseEstimator):
    """GP classification, one-vs-rest for more than two classes.

    Up to ``variational_threshold`` training points each binary problem is solved by the Laplace
    approximation (logistic link, R&W 2006 ch. 3; O(n³) per Newton step). Above it, an SVGP
    classifier is trained instead (Hensman et al. 2015): an ``ApproximateGPModel`` with a whitened
    ``VariationalStrategy`` over ``num_inducing`` inducing points (k-means centres of the inputs),
    a ``BernoulliLikelihood`` (probit link), and Adam on minibatches of the ELBO through
    :func:`torchgp.fit`; O(n m²) per epoch.

    Args:
        kernel: a torchgp kernel (copied) or kernel string; default ``"rbf"`` (ScaleKernel(RBF), ARD).
        n_restarts_optimizer: extra optimiser starts from perturbed values (Laplace); the best is kept.
        max_iter: L-BFGS-B iterations per start (Laplace); epochs are ``min(max_iter, 100)`` (variational).
        random_state: seed of the restarts, the k-means inducing points and the minibatches.
        dtype: ``"float64"`` (default) or ``"float32"``.
        variational_threshold: above this many training points the variational model is used.
        num_inducing: inducing points of each variational model (at most n).
        batch_size: minibatch size of the variational training.

    Attributes:
        classes_: the class labels.
        models_: one fitted binary model per class (one in the binary case): ``_LaplaceGP`` or ``ApproximateGPModel``.
        likelihoods_: the variational models' ``BernoulliLikelihood`` (empty for Laplace).
        variational_: whether the variational models were fitted.
        log_marginal_likelihood_value_: Laplace-approximate log marginal likelihood, or the ELBO, summed over the
            one-vs-rest problems.
        n_iter_: optimiser iterations (summed; epochs for the variational model).

    Shapes:
        ``fit(X (n, d), y (n,))``; ``predict_proba(X* (t, d))`` → ``(t, n_classes)``.
    """

    def __init__(
        self,
        kernel=None,
        *,
        n_restarts_optimizer=0,
        max_iter=200,
        random_state=None,
        dtype="float64",
        variational_threshold=2000,
        num_inducing=256,
        batch_size=512,
    ):
        self.kernel = kernel
        self.n_restarts_optimizer = n_restarts_optimizer
        self.max_iter = max_iter
        self.random_state = random_state
        self.dtype = dtype
        self.variational_threshold = variational_threshold
        self.num_inducing = num_inducing
        self.batch_size = batch_size

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        return tags

    def fit(self, X, y):
        """Fit on ``X (n, d)`` and labels ``y (n,)``; returns ``self``."""
        X, y = validate_data(self, X, y, dtype=np.float64)
        check_classification_targets(y)
        self.classes_, y_index = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(
                f"GaussianProcessClassifier needs at least 2 classes in y; got 1 class ({self.classes_[0]!r})."
            )
        dtype = _dtype(self.dtype)
        Xt = torch.tensor(X, dtype=dtype)
        problems = [1] if len(self.classes_) == 2 else range(len(self.classes_))
        seed = _seed(self.random_state)
        approx = _approximate_gp_model_class() if X.shape[0] > self.variational_threshold else None
        self.variational_ = approx is not None
        Z = self._inducing_points(X, seed, dtype) if self.variational_ else None
        self.models_, self.likelihoods_, self.fit_results_, total = [], [], [], 0.0
        for c in problems:
            t = torch.tensor((y_index == c).astype(np.float64), dtype=dtype)
            kernel = _build_kernel(self.kernel, X.shape[1], dtype)
            _init_from_data(kernel, Xt, 1.0)
            if self.variational_:
                model, likelihood, result, value = self._fit_variational(approx, Xt, t, Z, kernel, seed)
                self.likelihoods_.append(likelihood)
                total += value
            else:
                model = _LaplaceGP(Xt, t, kernel)
                objective = _LaplaceObjective(model)
                result = _fit(
                    objective, maxiter=self.max_iter, restarts=self.n_restarts_optimizer, seed=seed, progress=False
                )
                with torch.no_grad():
                    total += float(objective(model())) * X.shape[0]
            self.models_.append(model)
            self.fit_results_.append(result)
        self.log_marginal_likelihood_value_ = total
        self.n_iter_ = max(1, sum(r.iterations for r in self.fit_results_))
        return self

    def _inducing_points(self, X: np.ndarray, seed: int, dtype) -> torch.Tensor:
        """``Z (m, d)``: k-means centres of X (a few Lloyd iterations from a random subset; shared by every class)."""
        from sklearn.cluster import KMeans

        m = max(1, min(int(self.num_inducing), X.shape[0]))
        km = KMeans(n_clusters=m, init="random", n_init=1, max_iter=20, random_state=seed % (2**31 - 1)).fit(X)
        return torch.tensor(km.cluster_centers_, dtype=dtype)

    def _fit_variational(self, approx, Xt, t, Z, kernel, seed):
        from torch.utils.data import DataLoader, TensorDataset

        from torchgp.likelihoods import BernoulliLikelihood
        from torchgp.mlls import VariationalELBO

        n = Xt.shape[0]
        gen = torch.Generator().manual_seed(seed)
        model = approx(Z.clone(), kernel=kernel, mean="constant").to(Xt.dtype)
        likelihood = BernoulliLikelihood().to(Xt.dtype)
        elbo = VariationalELBO(likelihood, model, num_data=n)
        loader = DataLoader(TensorDataset(Xt, t), batch_size=int(self.batch_size), shuffle=True, generator=gen)
        epochs = max(1, min(int(self.max_iter), 100))
        with torch.random.fork_rng(devices=[]):  # q(u)'s initial noise: reproducible from random_state
            torch.manual_seed(seed)
            result = _fit(elbo, "adam", data=loader, maxiter=epochs, lr=0.05, seed=seed, progress=False)
        model.train()
        likelihood.train()
        with torch.no_grad():
            value = float(elbo(model(Xt), t)) * n
        model.eval()
        likelihood.eval()
        return model, likelihood, result, value

    def _positive_proba(self, Xt: torch.Tensor) -> np.ndarray:
        """``P(class c | x)`` of each one-vs-rest problem → ``(t, problems)``."""
        out = []
        with torch.no_grad():
            for i, model in enumerate(self.models_):
                if self.variational_:
                    p = self.likelihoods_[i](model(Xt)).probs
                else:
                    p = model.predict_proba(Xt)
                out.append(p.detach().cpu().numpy().astype(np.float64))
        return np.stack(out, axis=1)

    def predict_proba(self, X):
        """Class probabilities ``(t, n_classes)`` at ``X (t, d)``, columns ordered as ``classes_``."""
        check_is_fitted(self, "models_")
        X = validate_data(self, X, reset=False, dtype=np.float64)
        p = self._positive_proba(torch.tensor(X, dtype=_dtype(self.dtype)))
        if len(self.classes_) == 2:
            return np.hstack([1 - p, p])
        p = np.clip(p, 1e-300, None)
        return p / p.sum(1, keepdims=True)

    def predict(self, X):
        """Most probable class at ``X (t, d)`` → ``(t,)``."""
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]

    # ------------------------------------------------------------------ saving
    def _torchgp_file_state(self):
        """``(JSON state, torch parts, arrays)`` for :func:`torchgp.save` (no pickle)."""
        import dataclasses

        check_is_fitted(self, "models_")
        params, modules = _params_state(self)
        arrays = {}
        for i, model in enumerate(self.models_):
            if self.variational_:
                modules[f"model/{i}"], modules[f"likelihood/{i}"] = model, self.likelihoods_[i]
            else:
                modules[f"kernel/{i}"] = model.covar_module
                arrays[f"X/{i}"], arrays[f"t/{i}"] = model.train_inputs[0], model.train_targets
                if model.f_hat is not None:
                    arrays[f"f_hat/{i}"] = model.f_hat
        fitted = {
            **_fitted_state(self),
            "classes_": self.classes_.tolist(),
            "classes_dtype": self.classes_.dtype.str,
            "variational_": bool(self.variational_),
            "n_models": len(self.models_),
            "fit_results_": [dataclasses.asdict(r) for r in self.fit_results_],
        }
        return {"params": params, "fitted": fitted}, modules, arrays

    @classmethod
    def _from_torchgp_file(cls, state: dict, parts: dict, arrays: dict):
        est = _restore(cls, state, parts)
        fitted = state["fitted"]
        est.classes_ = np.asarray(fitted["classes_"], dtype=np.dtype(fitted["classes_dtype"]))
        est.variational_ = fitted["variational_"]
        est.fit_results_ = [_fit_result(r) for r in fitted["fit_results_"]]
        est.models_, est.likelihoods_ = [], []
        for i in range(fitted["n_models"]):
            if est.variational_:
                est.models_.append(parts[f"model/{i}"])
                est.likelihoods_.append(parts[f"likelihood/{i}"])
            else:
                model = _LaplaceGP(arrays[f"X/{i}"], arrays[f"t/{i}"], parts[f"kernel/{i}"])
                model.f_hat = arrays.get(f"f_hat/{i}")
                est.models_.append(model)
        return est
