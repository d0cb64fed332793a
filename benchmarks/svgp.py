"""SVGP training benchmark: torchgp vs GPyTorch 1.15 (time per epoch, peak RSS, test NLPD).

Setup: d = 4 synthetic regression, whitened VariationalStrategy + CholeskyVariationalDistribution,
ScaleKernel(RBF, ARD), GaussianLikelihood, VariationalELBO, Adam(lr=0.01), minibatch 1024, float32,
the same data, inducing points (the first m training points) and minibatch order for both.

Each (library, m) runs in its own subprocess (clean peak RSS, no shared caches) with
``torch.set_num_threads(threads)`` (1 by default); contenders are interleaved (torchgp, gpytorch,
gpytorch, torchgp, ... over repeats) so machine drift hits both alike. With ``--device cuda`` data, model and
likelihood live on the GPU, each epoch's clock is read after a synchronisation and the memory column is CUDA's
``max_memory_allocated`` (MB) instead of the peak RSS.

Usage:
    python benchmarks/svgp.py                 # n = 10^6, m in {256, 512}, 2 epochs, 1 repeat
    python benchmarks/svgp.py --quick         # n = 10^5
    python benchmarks/svgp.py --n 200000 --epochs 3 --repeats 2 --threads 1
    python benchmarks/svgp.py --quick --device cuda
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time

import torch


def make_data(n: int, d: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    X = torch.rand(n, d, generator=g)
    f = torch.sin(4 * X[:, 0]) + torch.cos(3 * X[:, 1]) + X[:, 2] * X[:, 3] - 0.5 * X[:, 3] ** 2
    y = f + 0.1 * torch.randn(n, generator=g)
    return X, y


def build(lib: str, Z: torch.Tensor):
    gp = __import__(lib)
    m, d = Z.shape

    class Model(gp.models.ApproximateGP):
        def __init__(self):
            q = gp.variational.CholeskyVariationalDistribution(m)
            super().__init__(gp.variational.VariationalStrategy(self, Z.clone(), q, learn_inducing_locations=True))
            self.mean_module = gp.means.ConstantMean()
            self.covar_module = gp.kernels.ScaleKernel(gp.kernels.RBFKernel(ard_num_dims=d))

        def forward(self, x):
            return gp.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))

    return gp, Model(), gp.likelihoods.GaussianLikelihood()


def run_one(lib: str, n: int, m: int, epochs: int, batch: int, threads: int, device: str = "cpu") -> dict:
    """Train ``lib``'s SVGP for ``epochs`` on ``device``: epoch times, test NLPD and the peak memory (MB)."""
    torch.set_num_threads(threads)
    dev = torch.device(device)
    cuda = dev.type == "cuda"
    X, y = (t.to(dev) for t in make_data(n))
    Xte, yte = (t.to(dev) for t in make_data(10_000, seed=1))
    gp, model, lik = build(lib, X[:m])
    model, lik = model.to(dev), lik.to(dev)
    mll = gp.mlls.VariationalELBO(lik, model, num_data=n)
    opt = torch.optim.Adam([*model.parameters(), *lik.parameters()], lr=0.01)
    g = torch.Generator().manual_seed(0)
    epoch_times = []
    for _ in range(epochs):
        perm = torch.randperm(n, generator=g).to(dev)
        if cuda:
            torch.cuda.synchronize(dev)
        t0 = time.perf_counter()
        for i in range(0, n, batch):
            idx = perm[i : i + batch]
            opt.zero_grad(set_to_none=True)
            loss = -mll(model(X[idx]), y[idx])
            loss.backward()
            opt.step()
        if cuda:
            torch.cuda.synchronize(dev)
        epoch_times.append(time.perf_counter() - t0)
    model.eval()
    lik.eval()
    nlpd = 0.0
    with torch.no_grad():
        for i in range(0, len(yte), 2000):
            out = model(Xte[i : i + 2000])
            mean, var = out.mean, out.variance + lik.noise.reshape(())
            nlpd += (0.5 * torch.log(2 * math.pi * var) + 0.5 * (yte[i : i + 2000] - mean) ** 2 / var).sum().item()
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out = dict(lib=lib, m=m, n=n, epoch_s=epoch_times, nlpd=nlpd / len(yte), peak_rss_mb=peak_rss_mb)
    if cuda:
        out["peak_cuda_mb"] = torch.cuda.max_memory_allocated(dev) / 2**20
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="n = 10^5 instead of 10^6")
    ap.add_argument("--n", type=int, default=None)
    ap.add_argument("--ms", type=int, nargs="+", default=[256, 512])
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu", help="cpu or cuda (or cuda:N); default cpu")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--_worker", nargs=2, metavar=("LIB", "M"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    n = args.n or (100_000 if args.quick else 1_000_000)
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: torch sees no CUDA device here; run with --device cpu")
    mem = "peak_cuda_mb" if torch.device(args.device).type == "cuda" else "peak_rss_mb"
    if args._worker:
        lib, m = args._worker
        print(json.dumps(run_one(lib, n, int(m), args.epochs, args.batch, args.threads, args.device)))
        return
    unit, label = ("CUDA MB", "peak CUDA memory") if mem == "peak_cuda_mb" else ("RSS MB", "peak RSS")
    results = []
    for r in range(args.repeats):
        for m in args.ms:
            order = ["torchgp", "gpytorch"] if (r % 2 == 0) else ["gpytorch", "torchgp"]
            for lib in order:
                cmd = [
                    sys.executable,
                    __file__,
                    "--_worker",
                    lib,
                    str(m),
                    "--n",
                    str(n),
                    "--epochs",
                    str(args.epochs),
                    "--batch",
                    str(args.batch),
                    "--threads",
                    str(args.threads),
                    "--device",
                    args.device,
                ]
                out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
                res = json.loads(out)
                results.append(res)
                print(
                    f"  {lib:8s} m={m:4d}: epochs {[f'{t:.2f}' for t in res['epoch_s']]} s, "
                    f"NLPD {res['nlpd']:.4f}, {label} {res[mem]:.0f} MB",
                    flush=True,
                )
    print(
        f"\nn = {n}, d = 4, batch {args.batch}, {args.epochs} epochs, torch.set_num_threads({args.threads}), "
        f"device {args.device}, torch {torch.__version__}"
    )
    print(
        f"| m | torchgp s/epoch | GPyTorch s/epoch | speed-up | torchgp NLPD | GPyTorch NLPD | torchgp {unit} | "
        f"GPyTorch {unit} |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for m in args.ms:
        rows = {lib: [r for r in results if r["lib"] == lib and r["m"] == m] for lib in ("torchgp", "gpytorch")}
        # per-epoch time: median over epochs and repeats
        t = {
            lib: sorted(x for r in rs for x in r["epoch_s"])[len([x for r in rs for x in r["epoch_s"]]) // 2]
            for lib, rs in rows.items()
        }
        nl = {lib: sum(r["nlpd"] for r in rs) / len(rs) for lib, rs in rows.items()}
        rss = {lib: max(r[mem] for r in rs) for lib, rs in rows.items()}
        print(
            f"| {m} | {t['torchgp']:.2f} | {t['gpytorch']:.2f} | {t['gpytorch'] / t['torchgp']:.2f}x | "
            f"{nl['torchgp']:.4f} | {nl['gpytorch']:.4f} | {rss['torchgp']:.0f} | {rss['gpytorch']:.0f} |"
        )


if __name__ == "__main__":
    main()
