"""One two-layer deep GP training step, torchgp vs GPyTorch 1.15, interleaved in one process.

Usage: ``python benchmarks/deep_gp_step.py [--n 4096] [--batch 256] [--m 64] [--hidden 4] [--samples 8] [--repeats 10]
[--threads 1] [--device cpu|cuda]``.
GPyTorch's deep GP tutorial architecture: a hidden layer of ``hidden`` GPs (linear mean, ARD RBF) and one
output GP (constant mean), whitened VariationalStrategy with learned inducing points, Gaussian likelihood,
DeepApproximateMLL(VariationalELBO), ``samples`` samples through the layers, Adam; float32, d = 4.
Both libraries' models and data live on ``--device`` (CUDA is synchronised after each step, before the clock is
read). Prints the median step times, their ratio and the peak memory (CUDA: ``max_memory_allocated``; CPU: RSS).
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


def build(lib, X, y, m, hidden, batch):
    class Layer(lib.models.deep_gps.DeepGPLayer):
        def __init__(self, d, h, mean):
            shape = torch.Size([]) if h is None else torch.Size([h])
            Z = torch.randn(*shape, m, d, generator=torch.Generator().manual_seed(1)).to(X)
            q = lib.variational.CholeskyVariationalDistribution(m, batch_shape=shape)
            super().__init__(lib.variational.VariationalStrategy(self, Z, q, learn_inducing_locations=True), d, h)
            self.mean_module = (
                lib.means.LinearMean(d, batch_shape=shape)
                if mean == "linear"
                else lib.means.ConstantMean(batch_shape=shape)
            )
            self.covar_module = lib.kernels.ScaleKernel(
                lib.kernels.RBFKernel(batch_shape=shape, ard_num_dims=d), batch_shape=shape
            )

        def forward(self, x):
            return lib.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))

    class Model(lib.models.deep_gps.DeepGP):
        def __init__(self):
            super().__init__()
            self.hidden_layer = Layer(X.shape[-1], hidden, "linear")
            self.last_layer = Layer(hidden, None, "constant")
            self.likelihood = lib.likelihoods.GaussianLikelihood()

        def forward(self, x):
            return self.last_layer(self.hidden_layer(x))

    model = Model().to(X.device)
    mll = lib.mlls.DeepApproximateMLL(lib.mlls.VariationalELBO(model.likelihood, model, num_data=X.shape[0]))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    batches = X.shape[0] // batch
    state = {"i": 0}

    def step():
        j = state["i"] % batches
        state["i"] += 1
        xb, yb = X[j * batch : (j + 1) * batch], y[j * batch : (j + 1) * batch]
        opt.zero_grad()
        (-mll(model(xb), yb)).backward()
        opt.step()

    return step


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--n", type=int, default=4096, help="training points (batches cycle through them)")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--m", type=int, default=64)
    p.add_argument("--hidden", type=int, default=4)
    p.add_argument("--samples", type=int, default=8)
    p.add_argument("--repeats", type=int, default=10)
    add_device_args(p)
    a = p.parse_args()
    if a.n < a.batch:
        p.error(f"--n must be at least one minibatch (--batch {a.batch}); got {a.n}")
    device = setup_device(a)
    import gpytorch

    import torchgp

    gen = torch.Generator().manual_seed(0)
    X = torch.rand(a.n, 4, generator=gen)
    y = torch.sin(4 * X[:, 0]) + torch.cos(3 * X[:, 1]) + 0.1 * torch.randn(a.n, generator=gen)
    X, y = X.to(device), y.to(device)
    steps = {
        "torchgp": build(torchgp, X, y, a.m, a.hidden, a.batch),
        "gpytorch": build(gpytorch, X, y, a.m, a.hidden, a.batch),
    }
    times = {k: [] for k in steps}
    peaks = dict.fromkeys(steps, 0.0)
    with torchgp.settings.num_likelihood_samples(a.samples), gpytorch.settings.num_likelihood_samples(a.samples):
        for s in steps.values():
            s()
        synchronize(device)
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
        f"{describe(device)}; n={a.n}, batch {a.batch}, m={a.m}, hidden={a.hidden}, S={a.samples}, "
        f"float32, median of {a.repeats}: torchgp {med['torchgp'] * 1e3:.1f} ms, gpytorch "
        f"{med['gpytorch'] * 1e3:.1f} ms, ratio {med['torchgp'] / med['gpytorch']:.2f}; {peak_memory(device, peaks)}"
    )


if __name__ == "__main__":
    main()
