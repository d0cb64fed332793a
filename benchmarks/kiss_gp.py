"""KISS-GP: one exact-MLL value + gradient and one prediction, torchgp vs GPyTorch's GridInterpolationKernel.

Usage: ``python benchmarks/kiss_gp.py [--sizes 100000 1000000] [--grid 10000] [--additive (with --grid 1000)] [--threads T]
[--device cpu|cuda] [--exact-var]``.

Each (library, n) runs in its own subprocess so that its peak RSS (``ru_maxrss``) is its own. The model is
GPyTorch's KISS-GP regression: ``GridInterpolationKernel(ScaleKernel(RBFKernel()), grid_size, num_dims=1)``
(``--additive``: ``AdditiveStructureKernel`` of that over d = 4), float32 like GPyTorch's examples; the
timed step is ``-mll(model(x), y)`` with its backward (the second of two), then ``model(x_test).mean`` and ``.variance`` for
1000 test points in eval mode under ``settings.fast_pred_var()`` (LOVE, as GPyTorch's KISS-GP tutorials predict;
``--exact-var`` for exact variances, 1000 CG solves). torchgp takes the iterative path with the kernel's own
products (``linalg.structured_solve``). Not run in CI.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def _model(gp, x, y, grid, additive):
    class KISSGP(gp.models.ExactGP):
        def __init__(self):
            super().__init__(x, y, gp.likelihoods.GaussianLikelihood())
            self.mean_module = gp.means.ConstantMean()
            ski = gp.kernels.GridInterpolationKernel(gp.kernels.ScaleKernel(gp.kernels.RBFKernel()), grid, num_dims=1)
            self.covar_module = gp.kernels.AdditiveStructureKernel(ski, num_dims=x.shape[-1]) if additive else ski

        def forward(self, z):
            return gp.distributions.MultivariateNormal(self.mean_module(z), self.covar_module(z))

    model = KISSGP()
    model.likelihood.noise = 0.05
    return model


def run(lib: str, n: int, grid: int, additive: bool, predict: bool = True, device="cpu", exact_var=False) -> dict:
    if lib == "torchgp":
        import torchgp as gp
    else:
        import gpytorch as gp
    g = torch.Generator().manual_seed(0)
    d = 4 if additive else 1
    x = torch.rand(n, d, generator=g).to(device)
    y = (torch.sin(6 * x.cpu()).sum(-1) + 0.1 * torch.randn(n, generator=g)).to(device)
    xs = torch.rand(1000, d, generator=g).to(device)
    model = _model(gp, x, y, grid, additive).to(device)
    mll = gp.mlls.ExactMarginalLogLikelihood(model.likelihood, model)
    model.train()
    times = []
    for _ in range(2):  # the second step is timed (the first one pays for imports and first-call set-up)
        t0 = time.perf_counter()
        with gp.settings.max_cholesky_size(0):
            loss = -mll(model(x), y)
            loss.backward()
        times.append(time.perf_counter() - t0)
    t_mll = times[-1]
    model.eval()
    t0 = time.perf_counter()
    mean = var = torch.full((1,), float("nan"))
    if predict:
        with torch.no_grad(), gp.settings.max_cholesky_size(0), gp.settings.fast_pred_var(not exact_var):
            pred = model(xs)
            mean, var = pred.mean, pred.variance
    t_pred = time.perf_counter() - t0 if predict else float("nan")
    return {
        "lib": lib,
        "n": n,
        "mll": float(loss),
        "mll_s": t_mll,
        "pred_s": t_pred,
        "mean_abs": float(mean.abs().mean()),
        "var_mean": float(var.mean()),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--sizes", type=int, nargs="+", default=[100_000])
    p.add_argument("--grid", type=int, default=10_000)
    p.add_argument("--additive", action="store_true")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--libs", nargs="+", default=["torchgp", "gpytorch"])
    p.add_argument("--no-predict", action="store_true", help="time the MLL + gradient only")
    p.add_argument("--exact-var", action="store_true", help="exact predictive variances instead of LOVE")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--child", nargs=2, metavar=("LIB", "N"))
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    if a.child:
        row = run(a.child[0], int(a.child[1]), a.grid, a.additive, not a.no_predict, a.device, a.exact_var)
        print(json.dumps(row))
        return
    print(f"threads={a.threads}, device={a.device}, grid={a.grid}, float32, one run per (library, n)")
    rows = []
    for n in a.sizes:
        for lib in a.libs:
            cmd = [sys.executable, __file__, "--child", lib, str(n), "--grid", str(a.grid), "--threads", str(a.threads)]
            cmd += ["--additive"] if a.additive else []
            cmd += ["--no-predict"] if a.no_predict else []
            cmd += ["--exact-var"] if a.exact_var else []
            cmd += ["--device", a.device]
            out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
            if out.returncode != 0:
                print(f"{lib} n={n} failed:\n{out.stderr[-2000:]}")
                continue
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            r = rows[-1]
            print(
                f"{lib:8s} n={n:>8d} grid={a.grid}: MLL+grad {r['mll_s']:7.2f} s, predict {r['pred_s']:6.2f} s, "
                f"peak RSS {r['peak_rss_mb']:8.0f} MB, -mll/n {r['mll']:.4f}, mean|μ*| {r['mean_abs']:.4f}"
            )
    by = {(r["lib"], r["n"]): r for r in rows}
    for n in a.sizes:
        t, g = by.get(("torchgp", n)), by.get(("gpytorch", n))
        if t and g:
            print(
                f"n={n}: torchgp/GPyTorch time (MLL+grad) {t['mll_s'] / g['mll_s']:.2f}x, "
                f"predict {t['pred_s'] / g['pred_s']:.2f}x, peak RSS {t['peak_rss_mb'] / g['peak_rss_mb']:.2f}x"
            )


if __name__ == "__main__":
    main()
