"""Mixed precision: kernel in float32, solve in float64 (``settings.solve_dtype``) vs pure float32 / float64.

Usage: ``python benchmarks/mixed_precision.py [--n 2000] [--threads 1]`` (ARD RBF d = 4, noise 0.01).
Prints the median time of one MLL forward+backward and the relative error of the loss and of the
gradient against float64.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import torchgp
from torchgp import settings
from torchgp.linalg import inv_quad_logdet


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    X64 = torch.rand(a.n, 4, dtype=torch.float64)
    y64 = torch.sin(X64.sum(-1))
    kernel = torchgp.kernels.ScaleKernel(torchgp.kernels.RBFKernel(ard_num_dims=4))
    kernel.base_kernel.lengthscale = torch.tensor([0.5, 0.7, 0.9, 1.1])

    def run(dtype, solve_dtype):
        k = kernel.to(dtype)
        k.zero_grad()
        X, y = X64.to(dtype), y64.to(dtype)
        noise = torch.full((a.n,), 0.01, dtype=dtype)
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
    results = {}
    for _ in range(a.repeats):  # interleaved
        for name, dtype, solve_dtype in contenders:
            t = time.perf_counter()
            results[name] = run(dtype, solve_dtype)
            times[name].append(time.perf_counter() - t)
    print(f"n={a.n}, threads={torch.get_num_threads()}, median of {a.repeats}")
    for name, _, _ in contenders:
        loss, grad = results[name]
        print(
            f"{name:32s} {statistics.median(times[name]) * 1e3:7.0f} ms  loss rel err "
            f"{abs(loss - ref_loss) / abs(ref_loss):.1e}  grad rel err {((grad - ref_grad).abs() / ref_grad.abs()).max():.1e}"
        )


if __name__ == "__main__":
    main()
