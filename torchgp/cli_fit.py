r"""The steps every ``torchgp fit`` takes, one target or several: columns, split, standardise, fit, report, save.

:mod:`torchgp.cli` (one target, an exact GP) and :mod:`torchgp.cli_multitask` (several targets, a multitask GP)
differ only in the model they build, the metadata they save and how they report test metrics; both call these.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import torch

from torchgp.cli_tables import CLIError, read_table

__all__ = ["FitData", "select_columns", "split_and_standardise", "data_kernel", "fit_and_report", "save_with_metrics"]


@dataclass
class FitData:
    """A table split into training and test rows, with the training rows' standardisation.

    Shapes: ``X_all (n, d)``; ``Y_all (n,)`` for one target, ``(n, t)`` for ``t``; ``train``/``test`` row indices;
    ``x_mean``, ``x_std`` ``(d,)``; ``y_mean``, ``y_std`` ``()`` or ``(t,)``; ``Xn``, ``Yn`` the standardised
    training rows, ``(n_train, d)`` and ``(n_train,)`` / ``(n_train, t)``.
    """

    X_all: torch.Tensor
    Y_all: torch.Tensor
    train: torch.Tensor
    test: torch.Tensor
    x_mean: torch.Tensor
    x_std: torch.Tensor
    y_mean: torch.Tensor
    y_std: torch.Tensor
    Xn: torch.Tensor
    Yn: torch.Tensor

    @property
    def n_test(self) -> int:
        return len(self.test)


def select_columns(args, targets: list[str]):
    """``(header, rows, features)`` of ``args.data`` for ``targets``, after checking columns and ``--test-fraction``.

    Features are ``--features`` or every column that is not a target. Raises :class:`CLIError` for a missing target,
    no feature left, a target listed among the features, or a test fraction outside ``[0, 1)``.
    """
    header, rows = read_table(args.data)
    one = len(targets) == 1
    missing = [t for t in targets if t not in header]
    if missing:
        what = f"target column {targets[0]!r}" if one else f"target column(s) {missing}"
        raise CLIError(f"{what} not in {args.data}; its columns are: {', '.join(header)}")
    if args.features:
        features = [f.strip() for f in args.features.split(",") if f.strip()]
    else:
        features = [c for c in header if c not in targets]
    if not features:
        what = f"the target {targets[0]!r}" if one else f"the targets {targets}"
        raise CLIError(f"{args.data} has no feature columns besides {what}; name them with --features")
    both = [t for t in targets if t in features]
    if both:
        raise CLIError(
            f"the target {targets[0]!r} is also listed in --features; remove it there"
            if one
            else f"the target(s) {both} are also listed in --features; remove them there"
        )
    if not 0 <= args.test_fraction < 1:
        raise CLIError(f"--test-fraction must be in [0, 1); got {args.test_fraction}")
    return header, rows, features


def split_and_standardise(X_all: torch.Tensor, Y_all: torch.Tensor, test_fraction: float, seed: int) -> FitData:
    """Hold out ``round(test_fraction · n)`` random rows (seeded) and standardise on the training rows.

    Each input column and each target is shifted to mean 0 and scaled to standard deviation 1 (a constant column
    keeps scale 1). Args: ``X_all (n, d)``, ``Y_all (n,)`` or ``(n, t)``. Raises :class:`CLIError` when fewer than
    two training rows remain.
    """
    n = len(Y_all)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_test = int(round(test_fraction * n))
    if n - n_test < 2:
        raise CLIError(
            f"only {n - n_test} training row(s) after holding out {n_test}; give more rows or lower --test-fraction"
        )
    test, train = perm[:n_test], perm[n_test:]
    X, Y = X_all[train], Y_all[train]
    x_mean, x_std = X.mean(0), X.std(0)
    x_std = torch.where(x_std > 0, x_std, torch.ones_like(x_std))
    y_mean, y_std = Y.mean(0), Y.std(0)
    y_std = torch.where(y_std > 0, y_std, torch.ones_like(y_std))
    return FitData(X_all, Y_all, train, test, x_mean, x_std, y_mean, y_std, (X - x_mean) / x_std, (Y - y_mean) / y_std)


def data_kernel(spec: str, Xn: torch.Tensor):
    """The kernel of the string ``spec`` over ``Xn (n, d)``'s columns, float64, initialised from the data."""
    from torchgp.kernels.parse import init_from_data, parse_kernel

    try:
        kernel = parse_kernel(spec, ard_num_dims=Xn.shape[1]).double()
    except ValueError as err:
        raise CLIError(str(err)) from None
    init_from_data(kernel, Xn, 1.0)
    return kernel


def fit_and_report(args, model, data: FitData, several: bool = False):
    """Fit ``model``'s exact MLL on the standardised training rows and print the fit and the hyperparameters.

    L-BFGS-B with ``args.max_iter``, ``args.restarts`` and ``args.seed`` (:func:`torchgp.optim.fit`); a fit that
    fails numerically becomes a :class:`CLIError`. ``several`` names the targets in the plural and reports the
    training MLL per observation (``n_train · t`` of them) instead of per point.

    Returns:
        ``(mll, result, metrics)``: the MLL object, the fit result and ``{"train_mll", "n_train", "n_test"}``,
        the training log marginal likelihood summed over all observations (model left in eval mode).
    """
    from torchgp.demo import hyperparameter_lines
    from torchgp.errors import NotPSDError
    from torchgp.mlls import ExactMarginalLogLikelihood
    from torchgp.optim.fit import fit

    mll = ExactMarginalLogLikelihood(model.likelihood, model)
    try:
        result = fit(
            mll,
            maxiter=args.max_iter,
            restarts=args.restarts,
            seed=args.seed,
            progress=None if args.progress else False,
        )
    except NotPSDError as err:
        raise CLIError(f"the fit failed numerically: {err}") from None
    model.train()
    with torch.no_grad():
        # the MLL is divided by the number of observations; times it, the log marginal likelihood
        train_mll = float(mll(model(data.Xn), data.Yn)) * data.Yn.numel()
    model.eval()
    print(f"fit: {result}")
    print(f"learned hyperparameters (inputs and target{'s' if several else ''} standardised):")
    for line in hyperparameter_lines(model):
        print(f"  {line}")
    per = "observation" if several else "point"
    print(f"training log marginal likelihood: {train_mll:.3f} ({train_mll / data.Yn.numel():.4f} per {per})")
    return mll, result, {"train_mll": train_mll, "n_train": len(data.train), "n_test": data.n_test}


def save_with_metrics(out: str, model, metadata: dict, metrics: dict) -> str:
    """Write ``out/model.safetensors`` (with ``metadata``) and ``out/metrics.json``; returns the model's path."""
    from torchgp.io import save

    os.makedirs(out, exist_ok=True)
    model_path = os.path.join(out, "model.safetensors")
    save(model, model_path, metadata=metadata)
    with open(os.path.join(out, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)
    print(f"model saved to {model_path}")
    return model_path
