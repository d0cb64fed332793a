"""keops-named RBF inside the exact MLL: torchgp's tiled kernel operator vs GPyTorch's default CG path.

Usage: ``python benchmarks/keops.py [--sizes 50000] [--d 8] [--threads T] [--libs torchgp gpytorch] [--device cpu|cuda]``.

``ScaleKernel(keops.RBFKernel(ard_num_dims=d))``, float32, noise 0.01, one ``-mll`` value + backward on the
iterative path (``max_cholesky_size(0)``). torchgp multiplies the kernel tile by tile
(``settings.kernel_block_size``), never holding the ``n × n`` matrix; GPyTorch without pykeops falls back to
its ordinary RBF kernel, whose CG path evaluates the whole matrix (``4 n²`` bytes). Each (library, n) runs in
its own subprocess, so its peak RSS (``ru_maxrss``) is its own. Not run in CI.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def run(lib: str, n: int, d: int, device: str = "cpu") -> dict:
    if lib == "torchgp":
        import torchgp as gp
    else:
        import gpytorch as gp
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, d, generator=g)
    y = (torch.sin(3 * x).sum(-1) + 0.1 * torch.randn(n, generator=g)).to(device)
    x = x.to(device)

    class Model(gp.models.ExactGP):
        def __init__(self):
            super().__init__(x, y, gp.likelihoods.GaussianLikelihood())
            self.mean_module = gp.means.ConstantMean()
            self.covar_module = gp.kernels.ScaleKernel(gp.kernels.keops.RBFKernel(ard_num_dims=d))

        def forward(self, z):
            return gp.distributions.MultivariateNormal(self.mean_module(z), self.covar_module(z))

    model = Model().to(device)
    model.likelihood.noise = 0.01
    model.covar_module.base_kernel.lengthscale = 0.5
    mll = gp.mlls.ExactMarginalLogLikelihood(model.likelihood, model)
    model.train()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # GPyTorch: "KeOps is not installed"; CG warnings are reported below
        t0 = time.perf_counter()
        with gp.settings.max_cholesky_size(0):
            loss = -mll(model(x), y)
            loss.backward()
        elapsed = time.perf_counter() - t0
    return {
        "lib": lib,
        "n": n,
        "mll": float(loss),
        "mll_s": elapsed,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "lengthscale_grad_norm": float(model.covar_module.base_kernel.raw_lengthscale.grad.norm()),
    }


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--sizes", type=int, nargs="+", default=[50_000])
    p.add_argument("--d", type=int, default=8)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--libs", nargs="+", default=["torchgp", "gpytorch"])
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--child", nargs=2, metavar=("LIB", "N"))
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    if a.child:
        print(json.dumps(run(a.child[0], int(a.child[1]), a.d, a.device)))
        return
    print(f"threads={a.threads}, device={a.device}, float32, d={a.d}, one run per (library, n)")
    rows = {}
    for n in a.sizes:
        print(f"n={n}: the dense n × n float32 kernel matrix GPyTorch's CG path evaluates: {4 * n * n / 2**30:.1f} GiB")
        for lib in a.libs:
            cmd = [sys.executable, __file__, "--child", lib, str(n), "--d", str(a.d), "--threads", str(a.threads)]
            cmd += ["--device", a.device]
            out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
            if out.returncode != 0:
                print(f"{lib} n={n} failed:\n{out.stderr[-2000:]}")
                continue
            r = rows[(lib, n)] = json.loads(out.stdout.strip().splitlines()[-1])
            print(
                f"{lib:8s} n={n:>7d} d={a.d}: MLL+grad {r['mll_s']:8.2f} s, peak RSS {r['peak_rss_mb']:8.0f} MB, "
                f"-mll/n {r['mll']:.4f}, |∂/∂raw ℓ| {r['lengthscale_grad_norm']:.4f}"
            )
        t, g = rows.get(("torchgp", n)), rows.get(("gpytorch", n))
        if t and g:
            print(
                f"n={n}: torchgp/GPyTorch time {t['mll_s'] / g['mll_s']:.2f}x, "
                f"peak RSS {t['peak_rss_mb'] / g['peak_rss_mb']:.2f}x"
            )


if __name__ == "__main__":
    main()
