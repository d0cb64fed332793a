"""One SVGP training step (minibatch 1024, d = 4), torchgp vs GPyTorch 1.15, interleaved in one process.

Usage: ``python benchmarks/svgp_step.py [--m 256 512] [--repeats 15] [--threads 1]``.
Whitened VariationalStrategy with learned inducing points, CholeskyVariationalDistribution,
ScaleKernel(ARD RBF), GaussianLikelihood, VariationalELBO, Adam; float32. Prints median step times
and their ratio. (``svgp.py`` measures whole epochs, peak RSS and NLPD in separate processes.)
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


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

    model, likelihood = Model(), lib.likelihoods.GaussianLikelihood()
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
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    import gpytorch

    import torchgp

    gen = torch.Generator().manual_seed(0)
    X = torch.rand(20480, 4, generator=gen)
    y = torch.sin(4 * X[:, 0]) + torch.cos(3 * X[:, 1]) + 0.1 * torch.randn(20480, generator=gen)
    print(f"threads={torch.get_num_threads()}, minibatch 1024, d = 4, float32, median of {a.repeats}")
    for m in a.m:
        steps = {"torchgp": build(torchgp, X, y, m), "gpytorch": build(gpytorch, X, y, m)}
        for s in steps.values():
            s()
        times = {k: [] for k in steps}
        for _ in range(a.repeats):
            for k, s in steps.items():
                t = time.perf_counter()
                s()
                times[k].append(time.perf_counter() - t)
        med = {k: statistics.median(v) for k, v in times.items()}
        print(
            f"m={m}: torchgp {med['torchgp'] * 1e3:.1f} ms, gpytorch {med['gpytorch'] * 1e3:.1f} ms, "
            f"ratio {med['torchgp'] / med['gpytorch']:.2f}"
        )


if __name__ == "__main__":
    main()
