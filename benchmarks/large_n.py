"""Exact GP on the iterative path at large n: one MLL + gradient, wall time and peak RSS.

Usage: ``python benchmarks/large_n.py [--n 100000] [--d 8] [--threads 1]`` (float32, ARD RBF, noise 0.01).
The kernel matrix is never held: products and the backward run in tiles (settings.kernel_block_size).
Also printed: CG iterations, the preconditioner's rank, and the time of the forward (preconditioner + CG + SLQ).
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torchgp  # noqa: E402
import torchgp.linalg.iterative as iterative  # noqa: E402
from torchgp import settings  # noqa: E402

_STATS = {}


def _recording(fn, key):
    """Wrap ``fn`` to note what the iterative path did (CG iterations, preconditioner rank)."""

    def wrapped(*args, **kwargs):
        t0 = time.perf_counter()
        out = fn(*args, **kwargs)
        _STATS[f"{key}_s"] = time.perf_counter() - t0
        if key == "pcg":
            _STATS["cg_iterations"] = out[1].iterations
        else:
            _STATS["rank"] = out.L.shape[-1]
        return out

    return wrapped


iterative.pcg = _recording(iterative.pcg, "pcg")
iterative.build_preconditioner = _recording(iterative.build_preconditioner, "precond")


class Model(torchgp.models.ExactGP):
    """Constant mean, ScaleKernel(ARD RBF), Gaussian likelihood: what a user writes."""

    def __init__(self, X, y, likelihood):
        super().__init__(X, y, likelihood)
        self.mean_module = torchgp.means.ConstantMean()
        self.covar_module = torchgp.kernels.ScaleKernel(torchgp.kernels.RBFKernel(ard_num_dims=X.shape[-1]))

    def forward(self, x):
        return torchgp.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--d", type=int, default=8)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--lengthscale", type=float, default=0.5)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    gen = torch.Generator().manual_seed(0)
    X = torch.rand(a.n, a.d, generator=gen)
    y = torch.sin(3 * X[:, 0]) + X[:, 1] + 0.1 * torch.randn(a.n, generator=gen)
    likelihood = torchgp.likelihoods.GaussianLikelihood()
    model = Model(X, y, likelihood)
    model.initialize(**{"covar_module.base_kernel.lengthscale": a.lengthscale, "likelihood.noise": 0.01})
    mll = torchgp.mlls.ExactMarginalLogLikelihood(likelihood, model)
    t0 = time.perf_counter()
    with settings.max_cholesky_size(1):  # the iterative path at every n (it is automatic above 4096)
        loss = -mll(model(X), y)
        t_fwd = time.perf_counter() - t0
        loss.backward()
    wall = time.perf_counter() - t0
    grad = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB → GiB (Linux)
    print(
        f"n={a.n} d={a.d} float32 threads={torch.get_num_threads()}: -MLL/n={loss.item():.5f}, "
        f"|grad|={grad.norm().item():.4f}, wall {wall:.1f} s (forward {t_fwd:.1f} s, backward {wall - t_fwd:.1f} s), "
        f"CG {_STATS.get('cg_iterations')} iterations in {_STATS.get('pcg_s', 0):.1f} s, preconditioner rank "
        f"{_STATS.get('rank')} in {_STATS.get('precond_s', 0):.1f} s, peak RSS {rss:.2f} GiB"
    )


if __name__ == "__main__":
    main()
