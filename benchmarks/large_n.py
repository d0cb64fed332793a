"""Exact GP on the iterative path at large n: one MLL + gradient, wall time and peak RSS.

Usage: ``python benchmarks/large_n.py [--n 100000] [--d 8] [--threads 1]`` (float32, ARD RBF, noise 0.01).
The kernel matrix is never held: products and the backward run in row blocks (settings.kernel_block_size).
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from torchgp import settings  # noqa: E402
from torchgp.linalg import AddedDiagOperator, KernelOperator, inv_quad_logdet  # noqa: E402


class ARDRBF:
    """``σ_f² exp(-½ ‖(x - x')/ℓ‖²)`` with log-parameters (the kernel interface the operators need)."""

    def __init__(self, d, dtype):
        self.raw_ls = torch.full((d,), 0.0, dtype=dtype, requires_grad=True)
        self.raw_os = torch.tensor(0.0, dtype=dtype, requires_grad=True)

    def parameters(self):
        return [self.raw_ls, self.raw_os]

    def output_shape(self, x1, x2, **params):
        return torch.Size([x1.shape[-2], x2.shape[-2]])

    def evaluate_block(self, x1, x2, diag=False, **params):
        if diag:
            return self.raw_os.exp().expand(x1.shape[:-1])
        a, b = x1 / self.raw_ls.exp(), x2 / self.raw_ls.exp()
        sq = (a.square().sum(-1, keepdim=True) - 2 * a @ b.mT + b.square().sum(-1)).clamp_min(0)
        return self.raw_os.exp() * torch.exp(-0.5 * sq)


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--d", type=int, default=8)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    gen = torch.Generator().manual_seed(0)
    X = torch.rand(a.n, a.d, generator=gen)
    y = torch.sin(3 * X[:, 0]) + X[:, 1] + 0.1 * torch.randn(a.n, generator=gen)
    kernel = ARDRBF(a.d, torch.float32)
    raw_noise = torch.tensor(0.01).log().requires_grad_()
    t0 = time.perf_counter()
    with settings.max_cholesky_size(1):
        op = AddedDiagOperator(KernelOperator(kernel, X, X), raw_noise.exp().expand(a.n))
        quad, logdet = inv_quad_logdet(op, y)
        mll = -0.5 * (quad + logdet) / a.n
        grads = torch.autograd.grad(mll, [*kernel.parameters(), raw_noise])
    wall = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB → GiB (Linux)
    print(f"n={a.n} d={a.d} float32 threads={torch.get_num_threads()}: MLL/n={mll.item():.5f}, "
          f"|grad|={torch.cat([g.reshape(-1) for g in grads]).norm().item():.4f}, wall {wall:.1f} s, peak RSS {rss:.2f} GiB")


if __name__ == "__main__":
    main()
