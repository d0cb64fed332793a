"""Cost of the cache key next to the work it guards.

Usage: ``python benchmarks/state_key.py [--sizes 100 1000 4000] [--d 4] [--repeats 20] [--threads 1] [--device cpu|cuda]``.
For an exact GP with ScaleKernel(ARD RBF), float64, on ``--device`` (CUDA synchronised before each clock reading):
the median time of
``state_key(model, X, y)`` (all parameters and buffers plus the O(n·d) training data) against one
``torch.linalg.cholesky`` of the ``n × n`` kernel matrix (the same holds for ``chol(K_zz)`` with
``m`` in place of ``n``).

Result (2-core shared VM, 1 thread, ``--sizes 100 1000 2000 --repeats 10``): n = 100: key 0.043 ms,
cholesky 0.044 ms; n = 1000: 0.051 ms vs 8.9 ms; n = 2000: 0.058 ms vs 63 ms.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import add_device_args, describe, setup_device, synchronize  # noqa: E402

import torchgp  # noqa: E402
from torchgp._state import state_key  # noqa: E402


def median_ms(fn, repeats, device):
    """Median wall time (ms) of ``repeats`` calls of ``fn`` after one warm-up, the device synchronised each time."""
    fn()
    synchronize(device)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        synchronize(device)
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 4000])
    ap.add_argument("--d", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=20)
    add_device_args(ap)
    args = ap.parse_args()
    device = setup_device(args)
    torch.manual_seed(0)
    kern = torchgp.kernels.ScaleKernel(torchgp.kernels.RBFKernel(ard_num_dims=args.d)).to(device, torch.float64)
    lik = torchgp.likelihoods.GaussianLikelihood().to(device, torch.float64)
    holder = torch.nn.ModuleDict({"k": kern, "l": lik})
    print(describe(device))
    print(f"{'n':>6} {'state_key':>12} {'cholesky':>12} {'ratio':>8}")
    for n in args.sizes:
        X = torch.rand(n, args.d, dtype=torch.float64).to(device)
        y = torch.randn(n, dtype=torch.float64).to(device)
        with torch.no_grad():
            K = kern(X).to_dense() + 1e-2 * torch.eye(n, dtype=torch.float64, device=device)
        key = median_ms(lambda X=X, y=y: state_key(holder, X, y) == state_key(holder, X, y), args.repeats, device) / 2
        chol = median_ms(lambda K=K: torch.linalg.cholesky(K), max(3, args.repeats // 4), device)
        print(f"{n:>6} {key:>10.3f}ms {chol:>10.3f}ms {key / chol:>8.4f}")


if __name__ == "__main__":
    main()
