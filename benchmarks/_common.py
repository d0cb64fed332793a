"""Shared pieces of the benchmarks: data, a small ARD-RBF, interleaved timing, the device options."""

from __future__ import annotations

import argparse
import math
import resource
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


def interleaved(contenders: dict, repeats: int, device="cpu") -> dict:
    """Median wall time (s) of each callable, run in turn ``repeats`` times after one warm-up each.

    On CUDA the device is synchronised before the clock is read, so a time is the work's, not its launch's.
    """
    for fn in contenders.values():
        fn()
    synchronize(device)
    times = {k: [] for k in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            t0 = time.perf_counter()
            fn()
            synchronize(device)
            times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def add_device_args(parser: argparse.ArgumentParser, threads: int = 1) -> argparse.ArgumentParser:
    """``--device cpu|cuda|cuda:N`` (default cpu) and ``--threads`` (torch's CPU threads, default ``threads``)."""
    parser.add_argument("--device", default="cpu", help="cpu or cuda (or cuda:N); default cpu")
    parser.add_argument("--threads", type=int, default=threads, help=f"torch CPU threads (default {threads})")
    return parser


def setup_device(args) -> torch.device:
    """Apply ``args.threads`` and check ``args.device``; the device, ready for ``tensor.to``.

    Raises a ``SystemExit`` with the fix when CUDA is asked for and torch sees none.
    """
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: torch sees no CUDA device here; run with --device cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.cuda.reset_peak_memory_stats(device)
    return device


def synchronize(device) -> None:
    """Wait for the queued work of a CUDA ``device`` (nothing on CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak_memory(device) -> None:
    """Start a new peak-memory window on a CUDA ``device`` (the CPU's peak RSS cannot be reset)."""
    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def cuda_peak_mb(device) -> float:
    """CUDA's ``max_memory_allocated`` (MB) since the last :func:`reset_peak_memory`; 0 on CPU."""
    if torch.device(device).type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return 0.0


def peak_memory(device, per_contender: dict | None = None) -> str:
    """The peak memory: on CUDA each contender's (``per_contender``: name → MB from :func:`cuda_peak_mb`) or the
    process's ``max_memory_allocated``; on CPU the process's peak RSS (all contenders together)."""
    if torch.device(device).type == "cuda":
        if per_contender:
            return "peak CUDA memory " + ", ".join(f"{k} {v:.0f} MB" for k, v in per_contender.items())
        return f"peak CUDA memory {cuda_peak_mb(device):.0f} MB"
    return f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB (the process: all contenders)"


def describe(device, threads=None) -> str:
    """``device=..., threads=N, torch X`` (and the GPU's name on CUDA) for the first line of a report."""
    device = torch.device(device)
    name = f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""
    return f"device={device}{name}, threads={torch.get_num_threads() if threads is None else threads}, torch {torch.__version__}"
