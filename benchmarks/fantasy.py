"""Fantasy updates of an exact GP: block Cholesky update vs refactorising, torchgp vs GPyTorch 1.15.2.

Usage: ``python benchmarks/fantasy.py [--n 4000] [--q 1 10] [--repeats 3] [--threads 1] [--device cpu|cuda]``

ConstantMean + ScaleKernel(ARD RBF), d = 4, noise 0.01, float64, n training points with a cached
posterior. Timed, each including one prediction at 10 test points (the moment the factor is needed):
``get_fantasy_model`` (torchgp: L_new = [[L, 0], [S, chol(C − SSᵀ)]] in O(n²q)), the same data by
refitting (a copy with ``set_train_data``: an O((n+q)³) Cholesky), and GPyTorch's ``get_fantasy_model``.
It also prints the largest difference between the fantasy and refit predictions and the peak memory (CUDA:
``max_memory_allocated`` over the run; CPU: RSS). Models and data of both libraries live on ``--device``; CUDA is
synchronised before each clock reading. Not run in CI.
"""

# ruff: noqa: B023  (the timing lambdas are called inside the iteration that defines them)
from __future__ import annotations

import argparse
import copy
import sys
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import add_device_args, data, describe, interleaved, peak_memory, setup_device  # noqa: E402

import torchgp  # noqa: E402


def build(lib, X, y):
    """``lib``'s exact GP on ``X (n, 4)``, ``y (n,)`` with fixed hyperparameters, on their device, in eval mode."""

    class Model(lib.models.ExactGP):
        def __init__(self, X, y, lik):
            super().__init__(X, y, lik)
            self.mean_module = lib.means.ConstantMean()
            self.covar_module = lib.kernels.ScaleKernel(lib.kernels.RBFKernel(ard_num_dims=4))

        def forward(self, x):
            return lib.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))

    model = Model(X, y, lib.likelihoods.GaussianLikelihood()).to(X)
    model.initialize(
        **{
            "likelihood.noise": torch.tensor(0.01, dtype=X.dtype, device=X.device),
            "covar_module.base_kernel.lengthscale": torch.tensor([0.5, 0.7, 0.9, 1.1], dtype=X.dtype, device=X.device),
            "covar_module.outputscale": torch.tensor(1.0, dtype=X.dtype, device=X.device),
        }
    )
    return model.eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=4000)
    ap.add_argument("--q", type=int, nargs="+", default=[1, 10])
    ap.add_argument("--repeats", type=int, default=3)
    add_device_args(ap)
    args = ap.parse_args()
    device = setup_device(args)
    warnings.simplefilter("ignore")
    import gpytorch

    X, y = (t.to(device) for t in data(args.n, torch.float64))
    Xs = torch.rand(10, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(3)).to(device)
    print(describe(device))
    ours, theirs = build(torchgp, X, y), build(gpytorch, X, y)
    with torch.no_grad(), gpytorch.settings.max_cholesky_size(10**6):
        ours(Xs).variance, theirs(Xs).variance  # cached posteriors (GPyTorch: forced onto Cholesky)
        for q in args.q:
            Xq, yq = (t.to(device) for t in data(q, torch.float64, seed=q + 1))

            def fantasy():
                return ours.get_fantasy_model(Xq, yq)(Xs).variance

            def refit():
                m = copy.deepcopy(ours)
                m.set_train_data(torch.cat([X, Xq]), torch.cat([y, yq]), strict=False)
                return m(Xs).variance

            def gpytorch_fantasy():
                return theirs.get_fantasy_model(Xq, yq)(Xs).variance

            times = interleaved(
                {"fantasy": fantasy, "refit": refit, "gpytorch": gpytorch_fantasy}, args.repeats, device
            )
            diff = (fantasy() - refit()).abs().max().item()
            print(
                f"n={args.n} q={q}: torchgp fantasy {times['fantasy'] * 1e3:.0f} ms, refit (refactorise) "
                f"{times['refit'] * 1e3:.0f} ms ({times['refit'] / times['fantasy']:.1f}x), GPyTorch fantasy "
                f"{times['gpytorch'] * 1e3:.0f} ms; max |fantasy - refit| variance {diff:.1e}; {peak_memory(device)}"
            )


if __name__ == "__main__":
    main()
