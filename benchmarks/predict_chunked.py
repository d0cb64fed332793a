"""Exact-GP prediction at many test points: time and peak RSS, torchgp vs GPyTorch 1.15.2, under fast_pred_var.

Usage: ``python benchmarks/predict_chunked.py [--n 1000] [--t 1000000] [--threads 1] [--device cpu|cuda]
[--limit-gb 12] [--block-sizes 1048576 4194304 16777216]``

Each contender runs in its own process (peak RSS is the process's ``ru_maxrss``): build the model
(ConstantMean + ScaleKernel(ARD RBF), d = 4, noise 0.01, float32), predict once at 100 points (the
posterior and LOVE caches), then time ``mean`` and ``variance`` of ``likelihood(model(X*))`` at ``t``
test points inside ``fast_pred_var``: all at once, and (``-loop``) in user-made batches of 10⁴. On CPU GPyTorch runs
under an address-space limit (``--limit-gb``) so that a t × n cross-covariance cannot take the machine down; hitting
it is reported. With ``--device cuda`` model and data live on the GPU, the clock is read after a synchronisation,
the peak is CUDA's ``max_memory_allocated`` (``peak_cuda_gb``; RSS is reported too) and no address-space limit is set
(the CUDA runtime reserves far more address space than it uses); running out of GPU memory is reported. Not run
in CI.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, resource, sys, time, warnings
sys.path.insert(0, {root!r}); sys.path.insert(0, {bench!r})
import torch
torch.set_num_threads({threads})
from _common import data
lib_name, n, t, block, device = {lib!r}, {n}, {t}, {block}, torch.device({device!r})
cuda = device.type == "cuda"
sync = (lambda: torch.cuda.synchronize(device)) if cuda else (lambda: None)
out_name, loop = lib_name, lib_name.endswith("-loop")  # the user cuts X* into batches of 10^4 points
lib_name = lib_name.removesuffix("-loop")
if {limit} > 0 and not cuda:
    resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))
warnings.simplefilter("ignore")
if lib_name == "torchgp":
    import torchgp as lib
else:
    import gpytorch as lib
X, y = (v.to(device) for v in data(n, torch.float32))
g = torch.Generator().manual_seed(1)

class Model(lib.models.ExactGP):
    def __init__(self, X, y, lik):
        super().__init__(X, y, lik)
        self.mean_module = lib.means.ConstantMean()
        self.covar_module = lib.kernels.ScaleKernel(lib.kernels.RBFKernel(ard_num_dims=4))

    def forward(self, x):
        return lib.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))

lik = lib.likelihoods.GaussianLikelihood()
model = Model(X, y, lik).to(device)
model.initialize(**{{"likelihood.noise": torch.tensor(0.01, device=device), "covar_module.base_kernel.lengthscale":
                   torch.tensor([0.5, 0.7, 0.9, 1.1], device=device),
                   "covar_module.outputscale": torch.tensor(1.0, device=device)}})
model.eval()
Xs = torch.rand(t, 4, generator=g).to(device)
ctx = [lib.settings.fast_pred_var()]
if lib_name == "torchgp" and block:
    ctx.append(lib.settings.prediction_block_size(block))
out = {{"lib": out_name, "n": n, "t": t, "block": block}}
try:
    with torch.no_grad(), ctx[0], (ctx[1] if len(ctx) > 1 else ctx[0]):
        lik(model(Xs[:100])).variance  # posterior and LOVE caches
        sync()
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        t0 = time.perf_counter()
        if loop:
            means, variances = [], []
            for i in range(0, t, 10000):
                p = lik(model(Xs[i : i + 10000]))
                means.append(p.mean)
                variances.append(p.variance)
            mean, var = torch.cat(means), torch.cat(variances)
        else:
            pred = lik(model(Xs))
            mean, var = pred.mean, pred.variance
        sync()
        out["seconds"] = time.perf_counter() - t0
        if cuda:
            out["peak_cuda_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
        out["mean_abs"] = float(mean.abs().mean()); out["var_mean"] = float(var.mean())
        ref = lik(model(Xs[:2000]))
        out["max_abs_diff_vs_first_2000"] = float((var[:2000] - ref.variance).abs().max())
except (MemoryError, RuntimeError) as err:  # torch.OutOfMemoryError is a RuntimeError
    out["error"] = type(err).__name__ + ": " + str(err)[:200]
out["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
print(json.dumps(out))
"""


def run(lib: str, n: int, t: int, threads: int, limit_gb: float, block: int = 0, device: str = "cpu") -> dict:
    """One contender in its own process: its JSON line (seconds, peaks, accuracy, or the error it hit)."""
    code = CHILD.format(
        device=device,
        root=str(ROOT),
        bench=str(ROOT / "benchmarks"),
        threads=threads,
        lib=lib,
        n=n,
        t=t,
        block=block,
        limit=int(limit_gb * 2**30),
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    lines = [line for line in res.stdout.splitlines() if line.startswith("{")]
    if not lines:
        return {"lib": lib, "n": n, "t": t, "error": f"process died (rc {res.returncode}): {res.stderr[-300:]}"}
    return json.loads(lines[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--t", type=int, default=1_000_000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu", help="cpu or cuda (or cuda:N); default cpu")
    ap.add_argument("--limit-gb", type=float, default=12.0, help="address-space limit of the GPyTorch process")
    ap.add_argument("--only", default=None, help="run one contender: torchgp, gpytorch or gpytorch-loop")
    ap.add_argument("--block-sizes", type=int, nargs="*", default=[], help="also time torchgp at these block sizes")
    args = ap.parse_args()
    dev = args.device
    if torch.device(dev).type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {dev}: torch sees no CUDA device here; run with --device cpu")
    print(f"device={dev}, threads={args.threads} per process, torch {torch.__version__}", flush=True)
    if args.only:
        limit = 0 if args.only == "torchgp" else args.limit_gb
        print(json.dumps(run(args.only, args.n, args.t, args.threads, limit, device=dev)))
        return
    print(json.dumps(run("torchgp", args.n, args.t, args.threads, 0, device=dev)), flush=True)
    for block in args.block_sizes:
        print(json.dumps(run("torchgp", args.n, args.t, args.threads, 0, block, device=dev)), flush=True)
    print(json.dumps(run("gpytorch", args.n, args.t, args.threads, args.limit_gb, device=dev)), flush=True)
    print(json.dumps(run("gpytorch-loop", args.n, args.t, args.threads, args.limit_gb, device=dev)))


if __name__ == "__main__":
    main()
