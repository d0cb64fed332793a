r"""``torchgp fit DATA --target a --target b``: several target columns fitted by one multitask (ICM) GP.

The model is :class:`~torchgp.models.builders.MultitaskExactGPModel` (``K_x ⊗ B``, task covariance of rank
``--task-rank``, one noise per target plus a shared one), inputs and each target standardised on their own;
``torchgp predict`` then writes ``<target>_mean``, ``<target>_std``, ``<target>_lower95``, ``<target>_upper95``
for every target.
"""

from __future__ import annotations

import csv
import json
import os
import sys

import torch

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
    from torchgp.demo import hyperparameter_lines, predictive_metrics
    from torchgp.errors import InputError, NotPSDError
    from torchgp.io import save
    from torchgp.kernels.parse import init_from_data, parse_kernel
    from torchgp.mlls import ExactMarginalLogLikelihood
    from torchgp.models.builders import MultitaskExactGPModel
    from torchgp.optim.fit import fit

    if getattr(args, "distributed", False):
        raise CLIError("--distributed fits one target; give a single --target (or drop --distributed)")
    header, rows = read_table(args.data)
    missing = [t for t in targets if t not in header]
    if missing:
        raise CLIError(f"target column(s) {missing} not in {args.data}; its columns are: {', '.join(header)}")
    if args.features:
        features = [f.strip() for f in args.features.split(",") if f.strip()]
    else:
        features = [c for c in header if c not in targets]
    if not features:
        raise CLIError(f"{args.data} has no feature columns besides the targets {targets}; name them with --features")
    both = [t for t in targets if t in features]
    if both:
        raise CLIError(f"the target(s) {both} are also listed in --features; remove them there")
    if not 0 <= args.test_fraction < 1:
        raise CLIError(f"--test-fraction must be in [0, 1); got {args.test_fraction}")
    t = len(targets)
    if not 1 <= args.task_rank <= t:
        raise CLIError(f"--task-rank must be between 1 and the number of targets ({t}); got {args.task_rank}")
    data, _ = numeric_columns(args.data, header, rows, features + targets, args.dropna)
    X_all, Y_all = data[:, :-t], data[:, -t:]
    n = len(Y_all)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(args.seed))
    n_test = int(round(args.test_fraction * n))
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
    Xn, Yn = (X - x_mean) / x_std, (Y - y_mean) / y_std
    try:
        kernel = parse_kernel(args.kernel, ard_num_dims=X.shape[1]).double()
    except ValueError as err:
        raise CLIError(str(err)) from None
    init_from_data(kernel, Xn, 1.0)
    with torch.random.fork_rng(devices=[]):  # the task factor starts random: reproducible from --seed
        torch.manual_seed(args.seed)
        try:
            model = MultitaskExactGPModel(Xn, Yn, kernel=kernel, rank=args.task_rank).double()
        except InputError as err:
            raise CLIError(str(err)) from None
    model.likelihood.noise = 0.05
    model.likelihood.task_noises = torch.full((t,), 0.05, dtype=torch.float64)
    mll = ExactMarginalLogLikelihood(model.likelihood, model)
    print(
        f"{args.data}: {n} rows, features {features}, targets {targets} (a multitask GP, task rank "
        f"{args.task_rank}); {len(train)} for training, {n_test} held out"
    )
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
        train_mll = float(mll(model(Xn), Yn)) * Yn.numel()  # the MLL is per observation
    model.eval()
    print(f"fit: {result}")
    print("learned hyperparameters (inputs and targets standardised):")
    for line in hyperparameter_lines(model):
        print(f"  {line}")
    print(f"training log marginal likelihood: {train_mll:.3f} ({train_mll / Yn.numel():.4f} per observation)")
    metrics = {"train_mll": train_mll, "n_train": len(train), "n_test": n_test, "targets": {}}
    if n_test:
        mean, std = _predict(model, X_all[test], x_mean, x_std, y_mean, y_std)
        for j, name in enumerate(targets):
            m = predictive_metrics(mean[:, j], std[:, j], Y_all[test, j])
            metrics["targets"][name] = m
            print(
                f"{name}: test RMSE: {m['rmse']:.4g}   test NLPD: {m['nlpd']:.4g}   "
                f"95% interval coverage: {100 * m['coverage95']:.1f}%"
            )
    os.makedirs(args.out, exist_ok=True)
    model_path = os.path.join(args.out, "model.safetensors")
    meta = {
        "features": features,
        "targets": targets,
        "x_mean": x_mean.tolist(),
        "x_std": x_std.tolist(),
        "y_mean": y_mean.tolist(),
        "y_std": y_std.tolist(),
        "kernel": args.kernel,
        "task_rank": args.task_rank,
    }
    save(model, model_path, metadata=meta)
    with open(os.path.join(args.out, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)
    print(f"model saved to {model_path}")
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
