"""One SVGP training step (minibatch 1024, d = 4), torchgp vs GPyTorch 1.15, interleaved in one process.

Usage: ``python benchmarks/svgp_step.py [--m 256 512] [--n 20480] [--repeats 15] [--threads 1] [--device cpu|cuda]``.
Whitened VariationalStrategy with learned inducing points, CholeskyVariationalDistribution,
ScaleKernel(ARD RBF), GaussianLikelihood, VariationalELBO, Adam; float32; both libraries' models and data on
``--device`` (CUDA synchronised after each step). Prints median step times, their ratio and the peak memory
(CUDA: each library's ``max_memory_allocated``; CPU: the process's RSS). (``svgp.py`` measures whole epochs, peak
RSS and NLPD in separate processes.)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    add_device_args,
    cuda_peak_mb,
    describe,
    peak_memory,
    reset_peak_memory,
    setup_device,
    synchronize,
)


def build(lib, X, y, m):
    Z = X[:m].clone()

    class Model(lib.models.ApproximateGP):
        def __init__(self):
            dist = lib.variational.CholeskyVariationalDistribution(m)
            strategy = lib.variational.VariationalStrategy(self, Z, dist, learn_inducing_locations=True)
            super().__init__(strategy)
            self.mean_module = lib.means.ConstantMean()
            self.covar_module = lib.kernels.ScaleKernel(lib.kernels.RBFKernel(ard_num_dims=X.shape[-1]))

        def forward(self, x):
            return lib.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))

    model, likelihood = Model().to(X.device), lib.likelihoods.GaussianLikelihood().to(X.device)
    elbo = lib.mlls.VariationalELBO(likelihood, model, num_data=X.shape[0])
    opt = torch.optim.Adam([*model.parameters(), *likelihood.parameters()], lr=0.01)
    batches = X.shape[0] // 1024
    state = {"i": 0}

    def step():
        j = state["i"] % batches
        state["i"] += 1
        xb, yb = X[j * 1024 : (j + 1) * 1024], y[j * 1024 : (j + 1) * 1024]
        opt.zero_grad()
        (-elbo(model(xb), yb)).backward()
        opt.step()

    return step


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--m", type=int, nargs="*", default=[256, 512])
    p.add_argument("--n", type=int, default=20480, help="training points (minibatches of 1024 cycle through them)")
    p.add_argument("--repeats", type=int, default=15)
    add_device_args(p)
    a = p.parse_args()
    if a.n < 1024:
        p.error(f"--n must be at least one minibatch (1024); got {a.n}")
    device = setup_device(a)
    import gpytorch

    import torchgp

    gen = torch.Generator().manual_seed(0)
    X = torch.rand(a.n, 4, generator=gen)
    y = torch.sin(4 * X[:, 0]) + torch.cos(3 * X[:, 1]) + 0.1 * torch.randn(a.n, generator=gen)
    X, y = X.to(device), y.to(device)
    print(f"{describe(device)}; n={a.n}, minibatch 1024, d = 4, float32, median of {a.repeats}")
    for m in a.m:
        steps = {"torchgp": build(torchgp, X, y, m), "gpytorch": build(gpytorch, X, y, m)}
        for s in steps.values():
            s()
        synchronize(device)
        times = {k: [] for k in steps}
        peaks = dict.fromkeys(steps, 0.0)
        for _ in range(a.repeats):
            for k, s in steps.items():
                reset_peak_memory(device)
                t = time.perf_counter()
                s()
                synchronize(device)
                times[k].append(time.perf_counter() - t)
                peaks[k] = max(peaks[k], cuda_peak_mb(device))
        med = {k: statistics.median(v) for k, v in times.items()}
        print(
            f"m={m}: torchgp {med['torchgp'] * 1e3:.1f} ms, gpytorch {med['gpytorch'] * 1e3:.1f} ms, "
            f"ratio {med['torchgp'] / med['gpytorch']:.2f}; {peak_memory(device, peaks)}"
        )


if __name__ == "__main__":
    main()
