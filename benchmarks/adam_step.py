"""One Adam step at n = 100 (the overhead-bound regime of Bayesian optimisation), interleaved in one process.

Usage: ``python benchmarks/adam_step.py [--n 100] [--repeats 30] [--threads 1] [--device cpu]``.
Contenders: torchgp's ExactGP, GPyTorch 1.15's ExactGP (Cholesky forced), and the same model written
as bare PyTorch (no library: the floor any library's overhead is measured against). ConstantMean +
ScaleKernel(ARD RBF, d = 4) + Gaussian noise, float64.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.nn import functional as F


def library_step(lib, X, y):
    class Model(lib.models.ExactGP):
        def __init__(self, lik):
            super().__init__(X, y, lik)
            self.mean_module = lib.means.ConstantMean()
            self.covar_module = lib.kernels.ScaleKernel(lib.kernels.RBFKernel(ard_num_dims=X.shape[-1]))

        def forward(self, x):
            return lib.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))

    lik = lib.likelihoods.GaussianLikelihood()
    model = Model(lik).to(X)
    model.train()
    mll = lib.mlls.ExactMarginalLogLikelihood(lik, model)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)

    def step():
        opt.zero_grad()
        (-mll(model(X), y)).backward()
        opt.step()

    return step


def bare_step(X, y):
    n, d = X.shape
    raw = [torch.zeros(1, d, dtype=X.dtype, device=X.device, requires_grad=True)] + [
        torch.zeros((), dtype=X.dtype, device=X.device, requires_grad=True) for _ in range(3)
    ]
    opt = torch.optim.Adam(raw, lr=0.01)

    def step():
        opt.zero_grad()
        raw_ls, raw_os, raw_noise, c = raw
        a = X / F.softplus(raw_ls)
        sq = (a.unsqueeze(-2) - a.unsqueeze(-3)).pow(2).sum(-1)
        K = F.softplus(raw_os) * torch.exp(-0.5 * sq) + (1e-4 + F.softplus(raw_noise)) * torch.eye(
            n, dtype=X.dtype, device=X.device
        )
        L = torch.linalg.cholesky(K)
        r = (y - c).unsqueeze(-1)
        alpha = torch.cholesky_solve(r, L)
        loss = 0.5 * ((r * alpha).sum() + 2 * L.diagonal().log().sum()) / n
        loss.backward()
        opt.step()

    return step


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    import gpytorch

    import torchgp

    gen = torch.Generator().manual_seed(0)
    X = torch.rand(a.n, 4, generator=gen, dtype=torch.float64)
    y = torch.sin(X.sum(-1))
    X, y = X.to(a.device), y.to(a.device)
    sync = torch.cuda.synchronize if a.device.startswith("cuda") else (lambda: None)
    steps = {
        "torchgp": library_step(torchgp, X, y),
        "gpytorch": library_step(gpytorch, X, y),
        "bare torch": bare_step(X, y),
    }
    with gpytorch.settings.max_cholesky_size(10**9):
        for s in steps.values():
            for _ in range(5):
                s()
        times = {k: [] for k in steps}
        for _ in range(a.repeats):
            for k, s in steps.items():
                t = time.perf_counter()
                for _ in range(10):
                    s()
                sync()
                times[k].append((time.perf_counter() - t) / 10)
    med = {k: statistics.median(v) for k, v in times.items()}
    base = med["gpytorch"]
    print(f"n={a.n}, threads={torch.get_num_threads()}, device={a.device}, median of {a.repeats}×10 steps")
    for k, v in med.items():
        print(f"{k:10s} {v * 1e3:.3f} ms  ({v / base:.2f}× GPyTorch)")


if __name__ == "__main__":
    main()
