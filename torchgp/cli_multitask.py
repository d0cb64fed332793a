r"""``torchgp fit DATA --target a --target b``: several target columns fitted by one multitask (ICM) GP.

The model is :class:`~torchgp.models.builders.MultitaskExactGPModel` (``K_x ⊗ B``, task covariance of rank
``--task-rank``, one noise per target plus a shared one), inputs and each target standardised on their own;
``torchgp predict`` then writes ``<target>_mean``, ``<target>_std``, ``<target>_lower95``, ``<target>_upper95``
for every target.
"""

from __future__ import annotations

import csv
import os
import sys

import torch

from torchgp.cli_fit import data_kernel, fit_and_report, save_with_metrics, select_columns, split_and_standardise
from torchgp.cli_tables import CLIError, numeric_columns, read_table

__all__ = ["fit_multitask", "predict_multitask", "split_targets"]


def split_targets(values) -> list[str]:
    """``--target`` values (repeated and/or comma lists) as one list of names, in order, without repeats."""
    names: list[str] = []
    for value in values if isinstance(values, (list, tuple)) else [values]:
        for name in str(value).split(","):
            name = name.strip()
            if name and name not in names:
                names.append(name)
    if not names:
        raise CLIError("--target needs at least one column name")
    return names


def fit_multitask(args, targets: list[str]) -> int:
    """Fit, report and save a multitask GP on the ``targets`` columns of ``args.data``; returns the exit status."""
    from torchgp.demo import predictive_metrics
    from torchgp.errors import InputError
    from torchgp.models.builders import MultitaskExactGPModel

    if getattr(args, "distributed", False):
        raise CLIError("--distributed fits one target; give a single --target (or drop --distributed)")
    header, rows, features = select_columns(args, targets)
    t = len(targets)
    if not 1 <= args.task_rank <= t:
        raise CLIError(f"--task-rank must be between 1 and the number of targets ({t}); got {args.task_rank}")
    data, _ = numeric_columns(args.data, header, rows, features + targets, args.dropna)
    d = split_and_standardise(data[:, :-t], data[:, -t:], args.test_fraction, args.seed)
    kernel = data_kernel(args.kernel, d.Xn)
    with torch.random.fork_rng(devices=[]):  # the task factor starts random: reproducible from --seed
        torch.manual_seed(args.seed)
        try:
            model = MultitaskExactGPModel(d.Xn, d.Yn, kernel=kernel, rank=args.task_rank).double()
        except InputError as err:
            raise CLIError(str(err)) from None
    model.likelihood.noise = 0.05
    model.likelihood.task_noises = torch.full((t,), 0.05, dtype=torch.float64)
    print(
        f"{args.data}: {len(d.Y_all)} rows, features {features}, targets {targets} (a multitask GP, task rank "
        f"{args.task_rank}); {len(d.train)} for training, {d.n_test} held out"
    )
    _, result, metrics = fit_and_report(args, model, d, several=True)
    metrics["targets"] = {}
    if d.n_test:
        mean, std = _predict(model, d.X_all[d.test], d.x_mean, d.x_std, d.y_mean, d.y_std)
        for j, name in enumerate(targets):
            m = predictive_metrics(mean[:, j], std[:, j], d.Y_all[d.test, j])
            metrics["targets"][name] = m
            print(
                f"{name}: test RMSE: {m['rmse']:.4g}   test NLPD: {m['nlpd']:.4g}   "
                f"95% interval coverage: {100 * m['coverage95']:.1f}%"
            )
    meta = {
        "features": features,
        "targets": targets,
        "x_mean": d.x_mean.tolist(),
        "x_std": d.x_std.tolist(),
        "y_mean": d.y_mean.tolist(),
        "y_std": d.y_std.tolist(),
        "kernel": args.kernel,
        "task_rank": args.task_rank,
    }
    save_with_metrics(args.out, model, meta, metrics)
    if not args.no_plot:
        try:
            from torchgp import plot

            plot.plot_training(result, path=os.path.join(args.out, "training.png"))
            print(f"plot saved to {os.path.join(args.out, 'training.png')}")
        except ImportError as err:
            print(f"(no plot: {err})")
    return 0


def _predict(model, X_raw, x_mean, x_std, y_mean, y_std):
    """Predictive mean and standard deviation of the noisy targets, ``(m, t)`` each, in the targets' units."""
    with torch.no_grad():
        pred = model.likelihood(model(((X_raw - x_mean) / x_std).to(torch.float64)))
        return pred.mean * y_std + y_mean, pred.variance.clamp_min(0).sqrt() * y_std


def predict_multitask(args, model, meta: dict) -> int:
    """``torchgp predict`` for a model file written by :func:`fit_multitask`: four columns per target."""
    features, targets = meta["features"], meta["targets"]
    header, rows = read_table(args.data)
    X, kept = numeric_columns(args.data, header, rows, features, args.dropna)
    as_tensor = lambda key: torch.tensor(meta[key], dtype=torch.float64)  # noqa: E731
    model.eval()
    mean, std = _predict(model, X, as_tensor("x_mean"), as_tensor("x_std"), as_tensor("y_mean"), as_tensor("y_std"))
    out = open(args.out, "w", newline="") if args.out else sys.stdout
    try:
        writer = csv.writer(out)
        names = [f"{name}_{what}" for name in targets for what in ("mean", "std", "lower95", "upper95")]
        writer.writerow([*header, *names])
        for i, r in enumerate(kept.tolist()):
            cells = []
            for j in range(len(targets)):
                m, s = float(mean[i, j]), float(std[i, j])
                cells += [f"{m:.10g}", f"{s:.10g}", f"{m - 1.959964 * s:.10g}", f"{m + 1.959964 * s:.10g}"]
            writer.writerow([*rows[r], *cells])
    finally:
        if args.out:
            out.close()
    if args.out:
        print(f"{len(kept)} predictions of {len(targets)} targets written to {args.out}")
    return 0
