"""One blockwise kernel product ``K V`` (a CG iteration's kernel pass): tiles from feature rows vs the module's tiles.

Usage::

    python benchmarks/kernel_tiles.py --n 20000 --threads 2                 # 33 columns (data + 32 probes) and 1
    python benchmarks/kernel_tiles.py --n 20000 --threads 1 --block 512 1024 # the feature-row route's tile sides

Model: ScaleKernel(ARD RBF), d = 8, ℓ = 0.5, X uniform on [0, 1]^d, float32 tiles and float64 columns (as the
iterative path's CG). For each column count, the routes (``settings.fast_kernel_tiles`` off / on, at each tile
side) run in turn, ``--repeats`` times interleaved; printed: median wall and CPU seconds, nanoseconds per kernel
entry (``n²``, of which a symmetric product evaluates half) and the CPU ratio to the module's tiles at 1024.
The machine's other load shows in wall time; CPU seconds are steadier.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torchgp  # noqa: E402
from torchgp import settings  # noqa: E402
from torchgp.linalg.operators import KernelOperator  # noqa: E402
from torchgp.linalg.operators.kernel import kernel_matmul_nograd  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--d", type=int, default=8)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--columns", type=int, nargs="+", default=[33, 1])
    p.add_argument("--block", type=int, nargs="+", default=[512], help="tile sides for the feature-row route")
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    gen = torch.Generator().manual_seed(0)
    X = torch.rand(a.n, a.d, generator=gen).to(a.device)
    kernel = torchgp.kernels.ScaleKernel(torchgp.kernels.RBFKernel(ard_num_dims=a.d)).to(a.device)
    kernel.base_kernel.lengthscale = 0.5
    op = KernelOperator(kernel, X, X)
    sync = torch.cuda.synchronize if a.device == "cuda" else (lambda: None)
    # the feature-row route's tiles are half settings.kernel_block_size (kernel_tiles.feature_tile_side)
    routes = [("module tiles", False, 1024)] + [(f"feature rows {b}", True, 2 * b) for b in a.block]
    print(f"n={a.n} d={a.d} threads={torch.get_num_threads()} device={a.device}, float32 tiles, float64 columns")
    for k in a.columns:
        V = torch.randn(a.n, k, generator=gen, dtype=torch.float64).to(a.device)
        times = {name: [] for name, _, _ in routes}
        for _ in range(a.repeats):
            for name, fast, block in routes:
                with settings.fast_kernel_tiles(fast), settings.kernel_block_size(block):
                    sync()
                    t0, c0 = time.perf_counter(), time.process_time()
                    kernel_matmul_nograd(op, V)
                    sync()
                    times[name].append((time.perf_counter() - t0, time.process_time() - c0))
        base_cpu = statistics.median(c for _, c in times["module tiles"])
        for name, ts in times.items():
            wall, cpu = statistics.median(w for w, _ in ts), statistics.median(c for _, c in ts)
            print(
                f"  {k:3d} columns, {name:18s}: wall {wall:7.3f} s ({wall / a.n**2 * 1e9:6.3f} ns/entry), "
                f"CPU {cpu:7.3f} s, CPU ratio to module tiles {cpu / base_cpu:.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
