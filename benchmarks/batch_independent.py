"""Batch-independent multitask exact GP (independent outputs): MLL + gradient and prediction, torchgp vs GPyTorch.

Usage: ``python benchmarks/batch_independent.py [--sizes 250x4 500x4] [--repeats 3] [--threads 1]
[--device cpu|cuda]``.

The model is GPyTorch's batch-independent multi-output tutorial: ``ConstantMean`` and ``ScaleKernel(RBFKernel)``
with ``batch_shape = (t,)``, ``MultitaskMultivariateNormal.from_batch_mvn`` (interleaved: a block-interleaved
covariance in both libraries), ``MultitaskGaussianLikelihood(num_tasks=t)``, float64, d = 2, the same parameter
values in both. torchgp factorises one ``n × n`` block per task. GPyTorch runs twice: under
``max_cholesky_size(10**6)`` (exact, as torchgp) and with its default settings (CG / Lanczos above 800 rows ``nt``).
Prediction is the posterior mean and variance at 200 test points with the cached factor rebuilt each time
(``set_train_data``). Wall-clock medians of interleaved repeats, CPU seconds (``time.process_time``) beside them.
Not run in CI.
"""

# ruff: noqa: B023  (the timing lambdas are called inside the iteration that defines them)
from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import add_device_args, describe, setup_device, synchronize  # noqa: E402

import torchgp  # noqa: E402

DT = torch.float64


def build(lib, X, Y):
    """``lib``'s batch-independent model on ``X (n, 2)``, ``Y (n, t)`` with fixed hyperparameters."""
    t = Y.shape[-1]
    batch = torch.Size([t])

    class BatchIndependent(lib.models.ExactGP):
        def __init__(self, x, y, likelihood):
            super().__init__(x, y, likelihood)
            self.mean_module = lib.means.ConstantMean(batch_shape=batch)
            self.covar_module = lib.kernels.ScaleKernel(lib.kernels.RBFKernel(batch_shape=batch), batch_shape=batch)

        def forward(self, x):
            mvn = lib.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))
            return lib.distributions.MultitaskMultivariateNormal.from_batch_mvn(mvn)

    model = BatchIndependent(X, Y, lib.likelihoods.MultitaskGaussianLikelihood(num_tasks=t)).to(X)
    model.initialize(
        **{
            "likelihood.task_noises": torch.full((t,), 0.05, dtype=DT, device=X.device),
            "likelihood.noise": torch.tensor([0.01], dtype=DT, device=X.device),
            "covar_module.base_kernel.lengthscale": torch.linspace(0.2, 0.5, t, dtype=DT, device=X.device).reshape(
                t, 1, 1
            ),
            "covar_module.outputscale": torch.ones(t, dtype=DT, device=X.device),
        }
    )
    return model


def timed(contenders: dict, repeats: int, device) -> dict:
    """``name → (median wall s, median CPU s)``, contenders run in turn ``repeats`` times after one warm-up each."""
    for fn in contenders.values():
        fn()
    wall, cpu = {k: [] for k in contenders}, {k: [] for k in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            synchronize(device)
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            synchronize(device)
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    return {k: (statistics.median(wall[k]), statistics.median(cpu[k])) for k in contenders}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", default=["250x4", "500x4"], help="n x t pairs")
    ap.add_argument("--repeats", type=int, default=3)
    add_device_args(ap)
    args = ap.parse_args()
    device = setup_device(args)
    warnings.simplefilter("ignore")
    import gpytorch

    print(describe(device, args.threads))
    for size in args.sizes:
        n, t = (int(s) for s in size.split("x"))
        g = torch.Generator().manual_seed(0)
        X = torch.rand(n, 2, generator=g, dtype=DT)
        Y = torch.sin(6 * X[:, :1] + torch.arange(t, dtype=DT)) + 0.1 * torch.randn(n, t, generator=g, dtype=DT)
        Xs = torch.rand(200, 2, generator=g, dtype=DT).to(device)
        X, Y = X.to(device), Y.to(device)
        gp = build(gpytorch, X, Y)
        # contender → (model, library, largest Cholesky size); the two GPyTorch runs share one model
        runs = {"torchgp": (build(torchgp, X, Y), torchgp, 10**6), "gpytorch": (gp, gpytorch, 10**6)}
        runs["gpytorch default"] = (gp, gpytorch, gpytorch.settings.max_cholesky_size.value())

        def step(name):
            model, lib, chol = runs[name]
            model.train()
            model.zero_grad()
            with gpytorch.settings.max_cholesky_size(chol):
                loss = -lib.mlls.ExactMarginalLogLikelihood(model.likelihood, model)(model(X), Y)
            loss.backward()
            return loss.item()

        def predict(name):
            model, _, chol = runs[name]
            model.set_train_data(X, Y, strict=False)  # drops the cached factor
            model.eval()
            with torch.no_grad(), gpytorch.settings.max_cholesky_size(chol), gpytorch.settings.fast_pred_var(False):
                f = model.likelihood(model(Xs))
                return f.mean.sum().item() + f.variance.sum().item()

        losses = {k: step(k) for k in runs}
        mll = timed({k: (lambda k=k: step(k)) for k in runs}, args.repeats, device)
        pred = timed({k: (lambda k=k: predict(k)) for k in runs}, args.repeats, device)
        for what, res in (("MLL + gradient", mll), ("predict 200", pred)):
            w1, c1 = res["torchgp"]
            line = f"n={n} t={t} {what}: torchgp {w1 * 1e3:.1f} ms (CPU {c1 * 1e3:.1f})"
            for name in ("gpytorch", "gpytorch default"):
                w2, c2 = res[name]
                line += f"; {name} {w2 * 1e3:.1f} ms (CPU {c2 * 1e3:.1f}), ratio {w1 / w2:.3f} (CPU {c1 / c2:.3f})"
            print(line)
        print(
            f"n={n} t={t}: |loss − GPyTorch's| {abs(losses['torchgp'] - losses['gpytorch']):.1e} (Cholesky), "
            f"{abs(losses['torchgp'] - losses['gpytorch default']):.1e} (default settings)"
        )


if __name__ == "__main__":
    main()
