"""Helpers shared by the estimators: dtypes, seeds, kernels, target scaling, and their file state."""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
from sklearn.utils import check_random_state

from torchgp.kernels import Kernel
from torchgp.kernels.parse import parse_kernel

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


# ----------------------------------------------------------------------------- saving (torchgp.save / torchgp.load)
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


def _fit_standardized(kernel: Kernel, X: torch.Tensor, objective, *args, **kwargs):
    """``torchgp.fit(objective, *args, **kwargs)`` with ``kernel``'s lengthscales in units of ``X (n, d)``'s spread.

    The estimators thereby fit as on standardised inputs (any scale of ``X`` follows the same optimisation
    path), while their fitted kernels report lengthscales in the inputs' own units.
    """
    from torchgp.optim._scale import lengthscales_in_units
    from torchgp.optim.fit import fit

    rescaling = lengthscales_in_units(kernel, X)
    try:
        return fit(objective, *args, **kwargs)
    finally:
        rescaling.undo()
