"""Shared pieces of the benchmarks: data, a small ARD-RBF, interleaved timing."""

from __future__ import annotations

import math
import statistics
import time

import torch

D = 4
NOISE = 0.01


def data(n: int, dtype: torch.dtype, seed: int = 0):
    """``X (n, 4)`` uniform on [0, 1]^4 and ``y (n,)`` = a smooth function plus noise of variance 0.01."""
    gen = torch.Generator().manual_seed(seed)
    X = torch.rand(n, D, generator=gen, dtype=torch.float64)
    y = (
        torch.sin(3 * X[:, 0])
        + X[:, 1] * torch.cos(2 * X[:, 2])
        + 0.1 * torch.randn(n, generator=gen, dtype=torch.float64)
    )
    return X.to(dtype), y.to(dtype)


def raw_params(dtype: torch.dtype):
    """Log-parameters (lengthscales (4,), outputscale, noise), requiring grad (sklearn's theta order)."""
    ls = torch.tensor([0.5, 0.7, 0.9, 1.1], dtype=dtype).log().requires_grad_()
    os_ = torch.tensor(1.0, dtype=dtype).log().requires_grad_()
    nz = torch.tensor(NOISE, dtype=dtype).log().requires_grad_()
    return [os_, ls, nz]


def ard_rbf(X: torch.Tensor, raw_os: torch.Tensor, raw_ls: torch.Tensor) -> torch.Tensor:
    """``σ_f² exp(-½ ‖(x - x')/ℓ‖²)``, ``(n, n)`` (R&W eq. 4.9 with ARD)."""
    Z = X / raw_ls.exp()
    sq = (Z.square().sum(-1, keepdim=True) - 2 * Z @ Z.mT + Z.square().sum(-1)).clamp_min(0)
    return raw_os.exp() * torch.exp(-0.5 * sq)


def gauss_const(n: int) -> float:
    return 0.5 * n * math.log(2 * math.pi)


def interleaved(contenders: dict, repeats: int) -> dict:
    """Median wall time (s) of each callable, run in turn ``repeats`` times after one warm-up each."""
    for fn in contenders.values():
        fn()
    times = {k: [] for k in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}
