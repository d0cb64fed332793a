"""``GaussianProcessClassifier``: an adapter of :class:`~torchgp.models.LaplaceGPClassifier` (SVGP for large n) to scikit-learn."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from torchgp.kernels.parse import init_from_data as _init_from_data
from torchgp.models.builders import ApproximateGPModel
from torchgp.models.laplace_classifier import LaplaceGPClassifier, LaplaceMarginalLogLikelihood, LaplacePosterior
from torchgp.sklearn._common import (
    _build_kernel,
    _dtype,
    _fit_result,
    _fit_standardized,
    _fitted_state,
    _params_state,
    _restore,
    _seed,
)

__all__ = ["GaussianProcessClassifier"]


class GaussianProcessClassifier(ClassifierMixin, BaseEstimator):
    """GP classification, one-vs-rest for more than two classes.

    Up to ``variational_threshold`` training points each binary problem is a
    :class:`~torchgp.models.LaplaceGPClassifier` (the Laplace approximation with a logistic link,
    R&W 2006 ch. 3; O(n³) per Newton step), fitted on its :class:`LaplaceMarginalLogLikelihood`
    (``torchgp.models.laplace_classifier``); this estimator only adapts it. Above it, an SVGP
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
        models_: one fitted binary model per class (one in the binary case): ``LaplaceGPClassifier`` or
            ``ApproximateGPModel``.
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
        approx = ApproximateGPModel if X.shape[0] > self.variational_threshold else None
        self.variational_ = approx is not None
        Z = self._inducing_points(X, seed, dtype) if self.variational_ else None
        self.models_, self.likelihoods_, self.fit_results_, total = [], [], [], 0.0
        self._posteriors = []  # Laplace: the posterior of each fitted model, at its mode
        for c in problems:
            t = torch.tensor((y_index == c).astype(np.float64), dtype=dtype)
            kernel = _build_kernel(self.kernel, X.shape[1], dtype)
            _init_from_data(kernel, Xt, 1.0)
            if self.variational_:
                model, likelihood, result, value = self._fit_variational(approx, Xt, t, Z, kernel, seed)
                self.likelihoods_.append(likelihood)
                total += value
            else:
                model = LaplaceGPClassifier(Xt, t, kernel)
                objective = LaplaceMarginalLogLikelihood(model)
                result = _fit_standardized(
                    kernel,
                    Xt,
                    objective,
                    maxiter=self.max_iter,
                    restarts=self.n_restarts_optimizer,
                    seed=seed,
                    progress=False,
                )
                with torch.no_grad():
                    value, f_hat = model.log_marginal_likelihood(objective.warm_start)
                total += float(value)
                self._posteriors.append(LaplacePosterior(model, f_hat))
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
            result = _fit_standardized(
                kernel, Xt, elbo, "adam", data=loader, maxiter=epochs, lr=0.05, seed=seed, progress=False
            )
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
                    p = self._posteriors[i].predict_proba(Xt)
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
                arrays[f"f_hat/{i}"] = self._posteriors[i].f_hat
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
        est.models_, est.likelihoods_, est._posteriors = [], [], []
        for i in range(fitted["n_models"]):
            if est.variational_:
                est.models_.append(parts[f"model/{i}"])
                est.likelihoods_.append(parts[f"likelihood/{i}"])
            else:
                model = LaplaceGPClassifier(arrays[f"X/{i}"], arrays[f"t/{i}"], parts[f"kernel/{i}"])
                f_hat = arrays.get(f"f_hat/{i}")
                est._posteriors.append(model.posterior() if f_hat is None else LaplacePosterior(model, f_hat))
                est.models_.append(model)
        return est
