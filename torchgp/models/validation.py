"""Checks of training and test data at the models' entry points (cheap; never on hot paths)."""

from __future__ import annotations

import math

import torch

from torchgp import _record, settings
from torchgp.errors import InputError, ShapeError
from torchgp.utils.warnings import GPInputWarning


def nonfinite_rows(t: torch.Tensor, point_dim: int) -> list[int]:
    """Indices along ``point_dim`` of points holding NaN or ±inf anywhere."""
    bad = ~torch.isfinite(t)
    dims = [i for i in range(t.dim()) if i != point_dim % t.dim()]
    if dims:
        bad = bad.any(dim=tuple(dims)) if len(dims) > 1 else bad.any(dim=dims[0])
    return torch.nonzero(bad).flatten().tolist()


def check_train_inputs(x, name: str = "train_inputs") -> torch.Tensor:
    """``(*batch, n, d)`` finite, non-empty training inputs (1-D → ``(n, 1)``)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (*batch, n, d); got {type(x).__name__}.")
    if x.dim() == 0:
        raise ShapeError(f"{name} must have shape (n,) or (*batch, n, d); got a scalar.")
    x = x.unsqueeze(-1) if x.dim() == 1 else x
    if x.shape[-2] == 0 or x.shape[-1] == 0:
        raise InputError(f"{name} is empty (shape {tuple(x.shape)}); a GP needs at least one training point.")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor; got {x.dtype}. Convert with .double() or .float().")
    rows = nonfinite_rows(x, -2)
    if rows:
        raise InputError(
            f"{name} holds NaN or inf in {len(rows)} row(s) (first: {rows[:10]}). Drop or impute those rows "
            "before training."
        )
    return x


def check_train_targets(y, x: torch.Tensor, multi_output: bool = False, check_finite: bool = True) -> torch.Tensor:
    """Targets matching ``x (*batch, n, d)``: ``(*batch, n)``; ``(*batch, n, 1)`` is accepted and squeezed.

    ``check_finite=False`` skips the O(n) NaN scan (hot paths that check the loss instead). NaN targets
    are refused unless ``settings.observation_nan_policy`` is 'mask' or 'fill' (missing observations).
    """
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"train_targets must be a torch.Tensor of shape (*batch, n); got {type(y).__name__}.")
    n = x.shape[-2]
    if not multi_output and y.dim() >= 2 and y.shape[-1] == 1 and y.shape[-2] == n:
        y = y.squeeze(-1)
    point_dim = -2 if multi_output else -1
    if y.dim() == 0 or y.shape[point_dim] != n:
        raise ShapeError(
            f"train_targets must have shape (*batch, n) with n = {n} to match train_inputs {tuple(x.shape)}; "
            f"got {tuple(y.shape)}. For one output, pass y as a 1-D tensor or (n, 1)."
        )
    if y.shape[-1] == 0:
        raise InputError("train_targets is empty; a GP needs at least one training point.")
    if not y.is_floating_point():
        y = y.to(x.dtype)
    elif y.dtype != x.dtype:
        y = y.to(x.dtype)
    if not check_finite:
        return y
    missing_ok = settings.observation_nan_policy.value() != "ignore"  # NaN = a missing observation
    rows = nonfinite_rows(torch.nan_to_num(y, nan=0.0, posinf=math.inf, neginf=-math.inf), point_dim)
    if not missing_ok and not rows:
        nan_rows = nonfinite_rows(y, point_dim)
        if nan_rows:  # GPyTorch accepts them here: the policy may be set around the training loop instead
            _record.warn(
                f"train_targets holds NaN at {len(nan_rows)} point(s) (first: {nan_rows[:10]}). They are missing "
                "observations only under `with torchgp.settings.observation_nan_policy('mask'):` (or 'fill') around "
                "training and prediction; otherwise the marginal likelihood refuses them. Drop those points or use "
                "that setting.",
                GPInputWarning,
                stacklevel=4,
            )
    if rows:
        raise InputError(
            f"train_targets holds inf at {len(rows)} point(s) (first: {rows[:10]}). Drop those points (from inputs "
            "and targets) or impute them before training."
        )
    return y


def check_test_inputs(x, train_x: torch.Tensor | None) -> torch.Tensor:
    """Test inputs ``(*batch, t, d)`` with the training inputs' feature count (NaN rows allowed)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"Inputs must be a torch.Tensor of shape (*batch, t, d); got {type(x).__name__}.")
    if x.dim() == 0:
        raise ShapeError("Inputs must have shape (t,) or (*batch, t, d); got a scalar.")
    x = x.unsqueeze(-1) if x.dim() == 1 else x
    if train_x is not None and x.shape[-1] != train_x.shape[-1]:
        raise ShapeError(
            f"Test inputs have {x.shape[-1]} features (shape {tuple(x.shape)}) but the model was trained on "
            f"{train_x.shape[-1]} (train_inputs {tuple(train_x.shape)}). Pass inputs of shape (t, {train_x.shape[-1]})."
        )
    if train_x is not None and x.dtype != train_x.dtype and x.is_floating_point():
        x = x.to(train_x.dtype)
    return x
