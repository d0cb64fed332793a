r"""The ``torchgp`` command: ``torchgp demo``, ``torchgp fit DATA.csv --target y``, ``torchgp predict MODEL DATA.csv``.

Several targets (``--target a --target b`` or ``--target a,b``) fit one multitask GP (:mod:`torchgp.cli_multitask`);
tables are read by :mod:`torchgp.cli_tables`; the steps of a fit are :mod:`torchgp.cli_fit`'s.

Run ``torchgp COMMAND --help`` for the options. Bad input (missing file or column, non-numeric
values, missing values without ``--dropna``, an empty file) ends with exit status 2 and a
one-line message saying what to change; no traceback.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys

import torch

from torchgp.cli_fit import data_kernel, fit_and_report, save_with_metrics, select_columns, split_and_standardise
from torchgp.cli_multitask import fit_multitask, predict_multitask, split_targets
from torchgp.cli_tables import CLIError, numeric_columns, read_table

__all__ = ["main", "CLIError", "read_table", "numeric_columns"]


# --------------------------------------------------------------------------- commands
def _cmd_demo(args) -> int:
    from torchgp.demo import run_demo

    run_demo(args.out, plot=not args.no_plot, quick=args.quick, progress=None if args.progress else False)
    return 0


def _cmd_fit(args) -> int:
    from torchgp.demo import predictive_metrics
    from torchgp.io import ExactGPModel

    targets = split_targets(args.target)
    if len(targets) > 1:
        return fit_multitask(args, targets)
    args.target = targets[0]
    header, rows, features = select_columns(args, targets)
    data, _ = numeric_columns(args.data, header, rows, features + [args.target], args.dropna)
    d = split_and_standardise(data[:, :-1], data[:, -1], args.test_fraction, args.seed)
    X_all, y_all, train, test = d.X_all, d.Y_all, d.train, d.test
    x_mean, x_std, y_mean, y_std = d.x_mean, d.x_std, float(d.y_mean), float(d.y_std)
    model = ExactGPModel(d.Xn, d.Yn, kernel=data_kernel(args.kernel, d.Xn)).double()
    model.likelihood.noise = 0.1
    if getattr(args, "distributed", False):  # kernel products shared by the torchrun ranks
        from torchgp.distributed.launch import shard_model

        shard_model(model)
    print(
        f"{args.data}: {len(y_all)} rows, features {features}, target {args.target!r}; {len(train)} for training, "
        f"{d.n_test} held out"
    )
    _, result, metrics = fit_and_report(args, model, d)

    def predict(Xraw):
        with torch.no_grad():
            pred = model.likelihood(model((Xraw - x_mean) / x_std))
            return pred.mean.detach() * y_std + y_mean, pred.variance.detach().clamp_min(0).sqrt() * y_std

    if d.n_test:
        mean, std = predict(X_all[test])
        metrics.update(predictive_metrics(mean, std, y_all[test]))
        print(
            f"test RMSE: {metrics['rmse']:.4g}   test NLPD: {metrics['nlpd']:.4g}   "
            f"95% interval coverage: {100 * metrics['coverage95']:.1f}% (calibrated: about 95%)"
        )
    if getattr(args, "distributed", False):  # from here on rank 0 alone works: save and plot as one process
        from torchgp.distributed.launch import unshard_model

        unshard_model(model)
    metadata = {
        "features": features,
        "target": args.target,
        "x_mean": x_mean.tolist(),
        "x_std": x_std.tolist(),
        "y_mean": y_mean,
        "y_std": y_std,
        "kernel": args.kernel,
    }
    save_with_metrics(args.out, model, metadata, metrics)
    if not args.no_plot:
        _plot_fit(args, model, X_all, y_all, train, test, x_mean, x_std, y_mean, y_std, features, predict, result)
    return 0


def _plot_fit(args, model, X_all, y_all, train, test, x_mean, x_std, y_mean, y_std, features, predict, result):
    try:
        from torchgp import plot
    except ImportError as err:  # pragma: no cover - plot itself imports matplotlib lazily
        print(f"(no plot: {err})")
        return
    path = os.path.join(args.out, "fit.png")
    try:
        d = X_all.shape[1]
        if d == 1:
            plot.plot_posterior_1d(
                model,
                likelihood=model.likelihood,
                test_x=(X_all[test] - x_mean) / x_std,
                test_y=(y_all[test] - y_mean) / y_std,
                num_samples=0,
                path=path,
                x_transform=lambda v: v * float(x_std[0]) + float(x_mean[0]),
                y_transform=lambda v, scale=False: v * y_std + y_mean,
                title=f"{args.target} vs {features[0]}",
            )
        elif d == 2:
            plot.plot_posterior_2d(
                model, path=path, title=f"{args.target} (standardised) over {features[0]}, {features[1]}"
            )
        else:
            idx = test if len(test) else train
            mean, std = predict(X_all[idx])
            plot.plot_predicted_vs_observed(
                mean, std, y_all[idx], path=path, title=f"{args.target}: {'test' if len(test) else 'training'} rows"
            )
        plot.plot_training(result, path=os.path.join(args.out, "training.png"))
    except ImportError as err:
        print(f"(no plot: {err})")
        return
    print(f"plot saved to {path}")


def _cmd_predict(args) -> int:
    from torchgp.io import ModelFileError, load

    try:
        model, meta, _ = load(args.model, with_metadata=True)
    except (ModelFileError, FileNotFoundError) as err:
        raise CLIError(str(err)) from None
    features = meta.get("features")
    if not features:
        raise CLIError(f"{args.model} holds no feature names; it was not written by `torchgp fit` or `torchgp demo`")
    if meta.get("targets"):
        return predict_multitask(args, model, meta)
    header, rows = read_table(args.data)
    X, kept = numeric_columns(args.data, header, rows, features, args.dropna)
    x_mean = torch.tensor(meta.get("x_mean", [0.0] * len(features)), dtype=torch.float64)
    x_std = torch.tensor(meta.get("x_std", [1.0] * len(features)), dtype=torch.float64)
    y_mean, y_std = meta.get("y_mean", 0.0), meta.get("y_std", 1.0)
    model.eval()
    with torch.no_grad():
        pred = model.likelihood(model(((X - x_mean) / x_std).to(torch.float64)))
        mean = pred.mean.detach() * y_std + y_mean
        std = pred.variance.detach().clamp_min(0).sqrt() * y_std
    out = open(args.out, "w", newline="") if args.out else sys.stdout
    try:
        writer = csv.writer(out)
        writer.writerow([*header, "mean", "std", "lower95", "upper95"])
        for i, r in enumerate(kept.tolist()):
            m, s = float(mean[i]), float(std[i])
            writer.writerow(
                [*rows[r], f"{m:.10g}", f"{s:.10g}", f"{m - 1.959964 * s:.10g}", f"{m + 1.959964 * s:.10g}"]
            )
    finally:
        if args.out:
            out.close()
    if args.out:
        print(f"{len(kept)} predictions written to {args.out}")
    return 0


# --------------------------------------------------------------------------- argument parsing
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="torchgp",
        description="Gaussian-process regression from the command line: fit a CSV, report, plot, save, predict.",
        epilog="Start with `torchgp demo` (Mauna Loa CO2, about 15 s).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser(
        "demo",
        help="fit and extrapolate the bundled Mauna Loa CO2 record",
        description="Fit an exact GP (trend + seasonal + irregular + correlated-noise kernel, R&W 5.4.3) to monthly CO2 means "
        "1958-1994, predict 1995-2001, print hyperparameters and test metrics, save "
        "a plot and the model.",
    )
    demo.add_argument(
        "--out",
        default="torchgp-demo",
        help="output folder for co2.png and co2_model.safetensors (default: %(default)s)",
    )
    demo.add_argument("--no-plot", action="store_true", help="do not write the plot (no matplotlib needed)")
    demo.add_argument("--quick", action="store_true", help="every second month and fewer iterations (a few seconds)")
    demo.add_argument("--progress", action="store_true", help="show a progress bar even when not on a terminal")
    demo.set_defaults(func=_cmd_demo)

    fit = sub.add_parser(
        "fit",
        help="fit a GP to a CSV/Parquet table and report test metrics",
        description="Read DATA, hold out a random test split, fit an exact GP (inputs and target "
        "standardised, hyperparameters by L-BFGS-B), print learned hyperparameters, the "
        "training log marginal likelihood, test RMSE/NLPD and the 95%% interval coverage, "
        "write a plot and the model to --out.",
    )
    fit.add_argument("data", metavar="DATA", help="CSV file with a header row (or .parquet with pyarrow installed)")
    fit.add_argument(
        "--target",
        required=True,
        action="append",
        help="name of the column to predict; several (--target a --target b, or --target a,b) fit one multitask "
        "(ICM) GP of all of them",
    )
    fit.add_argument(
        "--task-rank",
        type=int,
        default=1,
        help="with several targets: rank of the covariance between them, 1 to their number (default: %(default)s)",
    )
    fit.add_argument("--features", default=None, help="comma-separated input columns (default: every other column)")
    fit.add_argument(
        "--kernel",
        default="rbf",
        help="kernel string, e.g. 'rbf + periodic * rbf'; names: rbf, matern12, "
        "matern32, matern52, rq, periodic, linear, polyN, cosine, smN "
        "(default: %(default)s)",
    )
    fit.add_argument("--out", default="torchgp-fit", help="output folder (default: %(default)s)")
    fit.add_argument(
        "--test-fraction", type=float, default=0.2, help="fraction of rows held out (default: %(default)s)"
    )
    fit.add_argument("--dropna", action="store_true", help="drop rows with missing values instead of stopping")
    fit.add_argument(
        "--seed", type=int, default=0, help="seed of the test split and the restarts (default: %(default)s)"
    )
    fit.add_argument(
        "--restarts", type=int, default=2, help="extra optimiser starts; the best is kept (default: %(default)s)"
    )
    fit.add_argument("--max-iter", type=int, default=500, help="optimiser iterations per start (default: %(default)s)")
    fit.add_argument("--no-plot", action="store_true", help="do not write plots")
    fit.add_argument("--progress", action="store_true", help="show a progress bar even when not on a terminal")
    fit.add_argument(
        "--distributed",
        action="store_true",
        help="run under torchrun (e.g. `torchrun --nproc-per-node=2 -m torchgp fit ...`): the kernel products of the "
        "iterative path (n above settings.max_cholesky_size) are shared by the ranks; rank 0 prints and writes",
    )
    fit.set_defaults(func=_cmd_fit)

    pred = sub.add_parser(
        "predict",
        help="predict with a model saved by `torchgp fit`",
        description="Write the rows of DATA with the predictive mean, standard deviation and 95%% "
        "interval (columns mean, std, lower95, upper95; for a model of several targets, those four per target, "
        "named <target>_mean, <target>_std, <target>_lower95, <target>_upper95).",
    )
    pred.add_argument("model", metavar="MODEL", help="model file written by `torchgp fit` (model.safetensors)")
    pred.add_argument("data", metavar="DATA", help="CSV/Parquet file holding the model's feature columns")
    pred.add_argument("--out", default=None, help="output CSV (default: standard output)")
    pred.add_argument("--dropna", action="store_true", help="skip rows with missing feature values instead of stopping")
    pred.set_defaults(func=_cmd_predict)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``torchgp`` command with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    if getattr(args, "distributed", False):
        from torchgp.distributed.launch import prepare_cli

        args = prepare_cli(args)
    try:
        return args.func(args)
    except CLIError as err:
        print(f"torchgp {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"torchgp {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into e.g. `head`, which closed early
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silences the flush at exit
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
