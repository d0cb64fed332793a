"""Multi-output regression for :class:`~torchgp.sklearn.GaussianProcessRegressor`: ``y (n, t)`` with ``t > 1``.

Two models, by the estimator's ``multioutput`` parameter:

* ``"independent"``: ``t`` independent exact GPs (each its own hyperparameters and noise) as one batch,
  :class:`~torchgp.models.builders.IndependentMultitaskGPModel`;
* ``"icm"``: the intrinsic coregionalisation model ``K_x ⊗ B`` with ``B = W Wᵀ + diag(v)``, ``W (t, icm_rank)``,
  :class:`~torchgp.models.builders.MultitaskExactGPModel` (exact Kronecker inference).

Each output is standardised on its own (``normalize_y``); multi-output fits are always exact.
"""

from __future__ import annotations

import numpy as np
import torch

from torchgp.errors import InputError

MULTIOUTPUT = ("independent", "icm")


class _ColumnNormalizer:
    """``y → (y - mean) / std`` per column of ``y (n, t)`` (identity when disabled; a zero std counts as one)."""

    def __init__(self, y: np.ndarray, enabled: bool):
        self.mean = np.mean(y, axis=0) if enabled else np.zeros(y.shape[1])
        std = np.std(y, axis=0) if enabled else np.ones(y.shape[1])
        self.std = np.where(np.isfinite(std) & (std > 0), std, 1.0)


def check_multioutput(est) -> None:
    if est.multioutput not in MULTIOUTPUT:
        raise InputError(f"multioutput must be one of {MULTIOUTPUT}; got {est.multioutput!r}.")
    if not isinstance(est.icm_rank, (int, np.integer)) or est.icm_rank < 1:
        raise InputError(f"icm_rank must be a positive integer; got {est.icm_rank!r}.")


def fit_multioutput(est, X: np.ndarray, y: np.ndarray, dtype):
    """Fit ``est`` on ``X (n, d)``, ``y (n, t)``; sets the fitted attributes and returns ``est``."""
    from torchgp.constraints import GreaterThan
    from torchgp.kernels import Kernel
    from torchgp.kernels.parse import init_from_data, parse_kernel
    from torchgp.likelihoods import MultitaskGaussianLikelihood
    from torchgp.mlls import ExactMarginalLogLikelihood
    from torchgp.models.builders import IndependentMultitaskGPModel, MultitaskExactGPModel
    from torchgp.sklearn._common import _build_kernel, _fit_standardized, _seed

    check_multioutput(est)
    n, t = y.shape
    if est.multioutput == "icm" and est.icm_rank > t:
        raise InputError(f"icm_rank ({est.icm_rank}) cannot exceed the number of outputs t = {t}.")
    est._y_norm = _ColumnNormalizer(y, est.normalize_y)
    Xt = torch.tensor(X, dtype=dtype)
    Yt = torch.tensor((y - est._y_norm.mean) / est._y_norm.std, dtype=dtype)
    d = Xt.shape[-1]
    noise = GreaterThan(est.noise_lower_bound)
    if est.multioutput == "independent":
        spec = "rbf" if est.kernel is None else est.kernel
        if isinstance(spec, Kernel) and tuple(spec.batch_shape) != (t,):
            raise InputError(
                f"multioutput='independent' with a kernel object needs its batch_shape to be ({t},), one per output; "
                f"got {tuple(spec.batch_shape)}. Pass a kernel string, or use multioutput='icm'."
            )
        kernel = _build_kernel(spec, d, dtype) if isinstance(spec, Kernel) else parse_kernel(spec, d, batch_shape=(t,))
        likelihood = MultitaskGaussianLikelihood(num_tasks=t, has_global_noise=False, noise_constraint=noise)
        likelihood = likelihood.to(dtype)
        likelihood.task_noises = torch.full((t,), max(0.1, 2 * est.noise_lower_bound), dtype=dtype)
        init_from_data(kernel.to(dtype), Xt, 1.0)
        model = IndependentMultitaskGPModel(Xt, Yt, likelihood, kernel=kernel, mean=est.mean).to(dtype)
    else:
        kernel = _build_kernel(est.kernel, d, dtype)
        init_from_data(kernel, Xt, 1.0)
        likelihood = MultitaskGaussianLikelihood(num_tasks=t, has_global_noise=False, noise_constraint=noise)
        likelihood = likelihood.to(dtype)
        likelihood.task_noises = torch.full((t,), max(0.1, 2 * est.noise_lower_bound), dtype=dtype)
        seed = _seed(est.random_state)
        with torch.random.fork_rng(devices=[]):  # the task factor W starts random: reproducible from random_state
            torch.manual_seed(seed)
            model = MultitaskExactGPModel(Xt, Yt, likelihood, kernel=kernel, mean=est.mean, rank=int(est.icm_rank))
        model = model.to(dtype)
    mll = ExactMarginalLogLikelihood(likelihood, model)
    result = _fit_standardized(
        kernel, Xt, mll, est.optimizer, maxiter=est.max_iter, restarts=est.n_restarts_optimizer, seed=_seed(est.random_state),
        progress=est.progress,
    )  # fmt: skip
    model.train()
    with torch.no_grad():
        est.log_marginal_likelihood_value_ = float(mll(model(Xt), Yt)) * n * t  # the MLL is per observation
    model.eval()
    likelihood.eval()
    est.model_, est.likelihood_, est.kernel_, est.fit_result_ = model, likelihood, model.covar_module, result
    est.n_outputs_ = t
    est.n_iter_ = max(1, result.iterations)
    return est


def predict_multioutput(est, dist, return_std: bool, return_cov: bool):
    """``mean (n*, t)``, with ``std (n*, t)`` or ``cov (n*, n*, t)`` (per output, scikit-learn's layout)."""
    s, m = est._y_norm.std, est._y_norm.mean
    mean = dist.mean.detach().cpu().numpy().astype(np.float64) * s + m
    if return_cov:
        n, t = mean.shape
        blocks = _task_major(dist, dist.covariance_matrix.detach().cpu().numpy().astype(np.float64), n, t)
        blocks = blocks.reshape(t, n, t, n)[np.arange(t), :, np.arange(t), :]  # (t, n, n)
        return mean, np.moveaxis(blocks, 0, -1) * s**2
    if return_std:
        var = dist.variance.detach().clamp_min(0).cpu().numpy().astype(np.float64)
        return mean, np.sqrt(var) * s
    return mean


def sample_multioutput(est, dist, n_samples: int, rng) -> np.ndarray:
    """Joint draws over every point and output (the outputs of an ICM are correlated): ``(n*, t, n_samples)``."""
    s, m = est._y_norm.std, est._y_norm.mean
    mean = dist.mean.detach().cpu().numpy().astype(np.float64)
    n, t = mean.shape
    cov = _task_major(dist, dist.covariance_matrix.detach().cpu().numpy().astype(np.float64), n, t)
    jitter = 1e-10 * max(float(np.mean(np.diag(cov))), 1e-300)
    eigval, eigvec = np.linalg.eigh(cov + jitter * np.eye(n * t))
    root = eigvec * np.sqrt(np.clip(eigval, 0, None))
    draws = mean.T.reshape(-1, 1) + root @ rng.standard_normal((n * t, n_samples))  # rows (task, point)
    return np.swapaxes(draws.reshape(t, n, n_samples), 0, 1) * s[None, :, None] + m[None, :, None]


def _task_major(dist, cov: np.ndarray, n: int, t: int) -> np.ndarray:
    """The ``nt × nt`` covariance with rows ordered (task, point), whatever the distribution's interleaving."""
    if not getattr(dist, "_interleaved", True):
        return cov
    order = np.arange(n * t).reshape(n, t).T.reshape(-1)  # interleaved row of (task c, point j) is j t + c
    return cov[np.ix_(order, order)]


def multioutput_file_state(est) -> dict:
    """The fitted multi-output attributes for :func:`torchgp.save` (JSON)."""
    return {"n_outputs_": int(est.n_outputs_), "y_mean": est._y_norm.mean.tolist(), "y_std": est._y_norm.std.tolist()}


def restore_multioutput(est, state: dict) -> None:
    est.n_outputs_ = state["n_outputs_"]
    est._y_norm = _ColumnNormalizer.__new__(_ColumnNormalizer)
    est._y_norm.mean, est._y_norm.std = np.asarray(state["y_mean"]), np.asarray(state["y_std"])
