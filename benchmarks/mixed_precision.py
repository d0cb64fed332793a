"""Mixed precision: kernel in float32, solve in float64 (``settings.solve_dtype``) vs pure float32 / float64.

Usage: ``python benchmarks/mixed_precision.py [--n 2000] [--repeats 3] [--threads 1] [--device cpu|cuda]`` (ARD RBF
d = 4, noise 0.01). Prints the median time of one MLL forward+backward (CUDA synchronised before the clock is read)
and the relative error of the loss and of the gradient against float64, and the peak memory of each contender on
CUDA (``max_memory_allocated``) or the process's peak RSS on CPU. torchgp only: GPyTorch has no mixed-precision solve
to compare with.
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

from _common import (  # noqa: E402
    add_device_args,
    cuda_peak_mb,
    describe,
    peak_memory,
    reset_peak_memory,
    setup_device,
    synchronize,
)

import torchgp  # noqa: E402
from torchgp import settings  # noqa: E402
from torchgp.linalg import inv_quad_logdet  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--repeats", type=int, default=3)
    add_device_args(p)
    a = p.parse_args()
    device = setup_device(a)
    torch.manual_seed(0)
    X64 = torch.rand(a.n, 4, dtype=torch.float64).to(device)
    y64 = torch.sin(X64.sum(-1))
    kernel = torchgp.kernels.ScaleKernel(torchgp.kernels.RBFKernel(ard_num_dims=4)).to(device)
    kernel.base_kernel.lengthscale = torch.tensor([0.5, 0.7, 0.9, 1.1], device=device)

    def run(dtype, solve_dtype):
        k = kernel.to(dtype)
        k.zero_grad()
        X, y = X64.to(dtype), y64.to(dtype)
        noise = torch.full((a.n,), 0.01, dtype=dtype, device=device)
        with settings.solve_dtype(solve_dtype):
            quad, logdet = inv_quad_logdet(k(X).add_diagonal(noise), y)
        loss = 0.5 * (quad + logdet) / a.n
        loss.backward()
        return loss.item(), torch.cat([q.grad.reshape(-1).double() for q in k.parameters()])

    ref_loss, ref_grad = run(torch.float64, None)
    contenders = [
        ("float32", torch.float32, None),
        ("float32 kernel + float64 solve", torch.float32, torch.float64),
        ("float64", torch.float64, None),
    ]
    times = {name: [] for name, _, _ in contenders}
    peaks = {name: 0.0 for name, _, _ in contenders}
    results = {}
    for _ in range(a.repeats):  # interleaved
        for name, dtype, solve_dtype in contenders:
            reset_peak_memory(device)
            synchronize(device)
            t = time.perf_counter()
            results[name] = run(dtype, solve_dtype)  # .item() in it waits for the device
            synchronize(device)
            times[name].append(time.perf_counter() - t)
            peaks[name] = max(peaks[name], cuda_peak_mb(device))
    print(f"n={a.n}, {describe(device)}, median of {a.repeats}")
    for name, _, _ in contenders:
        loss, grad = results[name]
        print(
            f"{name:32s} {statistics.median(times[name]) * 1e3:7.0f} ms  loss rel err "
            f"{abs(loss - ref_loss) / abs(ref_loss):.1e}  grad rel err {((grad - ref_grad).abs() / ref_grad.abs()).max():.1e}"
        )
    print(peak_memory(device, peaks))


if __name__ == "__main__":
    main()
