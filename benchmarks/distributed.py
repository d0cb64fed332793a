"""torchgp on torch.distributed: a sharded exact GP's MLL + gradient, and a data-parallel SVGP epoch.

Launch with torchrun (gloo on CPU, NCCL on GPU); without torchrun it runs as one process::

    # exact GP, iterative path, float32, d = 8: 1 process x 2 threads, 1 x 1, and 2 processes x 1 thread
    python benchmarks/distributed.py exact --num-data 20000 --threads 2
    python benchmarks/distributed.py exact --num-data 20000 --threads 1
    torchrun --standalone --nproc-per-node=2 benchmarks/distributed.py exact --num-data 20000 --threads 1
    # SVGP, n = 10^6: one epoch on 1 and on 2 processes (the global minibatch is split between the ranks)
    torchrun --standalone --nproc-per-node=1 benchmarks/distributed.py svgp --num-data 1000000
    torchrun --standalone --nproc-per-node=2 benchmarks/distributed.py svgp --num-data 1000000

Every run takes ``--device cpu|cuda`` (default cpu; cuda: NCCL, one GPU per process) and ``--threads``.
Rank 0 prints one JSON line: wall time (the slowest rank's), every rank's CPU seconds and peak RSS. For the exact
GP, ``--profile`` adds one line per rank with ``[wall s, CPU s, calls, peak RSS MiB sampled while it ran]`` for
each part
(kernel tiles, each collective by name, preconditioner build and apply, backward), ``--replicated-cg`` runs CG
replicated on every rank instead of split by rows, and ``--max-cg-iterations`` caps CG (a memory run at large n).
The exact GP's line also times a fixed GEMM loop and a fixed streaming loop on every rank at once
(``control_*_s_per_rank``): with the same from a one-process run they give the machine's own ceiling for the
speed-up, ``P ×`` one process's seconds ÷ the concurrent ranks'.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import threading
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torchgp  # noqa: E402
from torchgp import settings  # noqa: E402

dist = torchgp.distributed


class ExactModel(torchgp.models.ExactGP):
    """Constant mean, ScaleKernel(ARD RBF) behind a ShardedKernel (its base kernel with one process)."""

    def __init__(self, X, y, likelihood, shard_cg=True):
        super().__init__(X, y, likelihood)
        self.mean_module = torchgp.means.ConstantMean()
        kernel = torchgp.kernels.ScaleKernel(torchgp.kernels.RBFKernel(ard_num_dims=X.shape[-1]))
        self.covar_module = dist.ShardedKernel(kernel, shard_cg=shard_cg)

    def forward(self, x):
        return torchgp.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))


class SVGP(torchgp.models.ApproximateGP):
    def __init__(self, Z):
        q = torchgp.variational.CholeskyVariationalDistribution(Z.shape[0])
        super().__init__(torchgp.variational.VariationalStrategy(self, Z, q, learn_inducing_locations=True))
        self.mean_module = torchgp.means.ConstantMean()
        self.covar_module = torchgp.kernels.ScaleKernel(torchgp.kernels.RBFKernel(ard_num_dims=Z.shape[-1]))

    def forward(self, x):
        return torchgp.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))


def _hwm_mib() -> float:
    """Peak resident memory so far, MiB (``VmHWM`` of ``/proc/self/status``; 0 where there is none)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _device(a) -> torch.device:
    """This rank's device: its ``LOCAL_RANK`` GPU under ``--device cuda``, else the CPU."""
    if a.device == "cuda":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


_DEVICE = torch.device("cpu")


def _gather(value: float) -> list[float]:
    """``value`` from every rank, in rank order (one all_reduce)."""
    buf = torch.zeros(dist.world_size(), dtype=torch.float64, device=_DEVICE)
    buf[dist.rank()] = value
    dist.all_reduce_([buf], "benchmark results")
    return buf.tolist()


def _rss_mib() -> float:
    """Resident memory now, MiB (``/proc/self/statm``; 0 where there is none)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE / 2**20
    except OSError:
        return 0.0


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_OUTSIDE = "(outside the wrapped parts)"


class _Timers:
    """Wall and CPU seconds spent in named library functions on this rank (``--profile``), wrapped in place.

    A sampling thread reads the resident memory every 2 ms (torch's operators release the GIL) and keeps, for
    each part, the largest value seen while it was running: the peak RSS per phase.
    """

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self.rss_peak: dict[str, float] = {}
        self.active: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def start(self) -> None:
        """Start the RSS sampling thread (after :meth:`install`)."""
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            rss = _rss_mib()
            for key in list(self.active) or [_OUTSIDE]:
                if rss > self.rss_peak.get(key, 0.0):
                    self.rss_peak[key] = rss

    def wrap(self, owner, name: str, label: str, what_at: int | None = None) -> None:
        fn = getattr(owner, name, None)
        if fn is None:  # a part this version of the library does not have
            return

        def timed(*args, **kwargs):
            key = label
            if what_at is not None:  # the collective's ``what`` argument names the part
                what = args[what_at] if len(args) > what_at else kwargs.get("what", "")
                key = f"{label}: {what}"
            t0, c0 = time.perf_counter(), time.process_time()
            self.active.append(key)
            try:
                return fn(*args, **kwargs)
            finally:
                self.active.pop()
                self.seconds[key] = self.seconds.get(key, 0.0) + time.perf_counter() - t0
                self.cpu[key] = self.cpu.get(key, 0.0) + time.process_time() - c0
                self.calls[key] = self.calls.get(key, 0) + 1

        setattr(owner, name, timed)

    def install(self) -> None:
        from torchgp.distributed import process_group
        from torchgp.linalg import iterative, iterative_system, pivoted_cholesky, sharded_preconditioner

        self.wrap(process_group, "all_reduce_", "collective", what_at=1)
        self.wrap(process_group, "all_gather_rows", "collective", what_at=2)
        self.wrap(process_group, "reduce_scatter_rows", "collective", what_at=2)
        for module in (iterative, iterative_system):
            self.wrap(module, "kernel_matmul_nograd", "kernel product K V (incl. its collective)")
            self.wrap(module, "build_preconditioner", "preconditioner build")
        self.wrap(iterative, "pcg", "CG total")
        self.wrap(iterative, "operator_bilinear_grads", "backward bilinear forms")
        self.wrap(iterative._IterativeInvQuadLogdet, "forward", "forward total")
        iterative._IterativeInvQuadLogdet.forward = staticmethod(iterative._IterativeInvQuadLogdet.forward)
        self.wrap(iterative._IterativeInvQuadLogdet, "backward", "backward total")
        iterative._IterativeInvQuadLogdet.backward = staticmethod(iterative._IterativeInvQuadLogdet.backward)
        self.wrap(pivoted_cholesky, "sharded_pivoted_cholesky", "preconditioner build: pivoted Cholesky rows")
        self.wrap(sharded_preconditioner.ShardedPivotedCholeskyPreconditioner, "__init__", "preconditioner build: core")
        self.wrap(sharded_preconditioner.ShardedPivotedCholeskyPreconditioner, "sample", "preconditioner probes")
        self.wrap(sharded_preconditioner.ShardedPivotedCholeskyPreconditioner, "leading_factor", "control factor")
        self.wrap(sharded_preconditioner.ShardedPivotedCholeskyPreconditioner, "solve", "preconditioner solve")
        try:
            from torchgp.distributed import sharded_cg

            self.wrap(sharded_cg.ShardedMatmul, "rows", "sharded CG product rows (incl. collectives)")
            self.wrap(sharded_cg.ShardedMatmul, "_partial", "sharded CG tiles")
            self.wrap(sharded_preconditioner.ShardedPivotedCholeskyPreconditioner, "solve_rows", "preconditioner rows")
        except ImportError:
            pass

    def report(self) -> dict:
        """``{part: [wall s, CPU s, calls, peak RSS MiB sampled while it ran]}`` (nested parts count in both)."""
        self._stop.set()
        out = {
            k: [round(self.seconds[k], 2), round(self.cpu[k], 2), self.calls[k], round(self.rss_peak.get(k, 0.0))]
            for k in sorted(self.seconds)
        }
        out[_OUTSIDE] = [None, None, None, round(self.rss_peak.get(_OUTSIDE, 0.0))]
        return out


_TIMERS: _Timers | None = None


def bench_exact(a) -> dict:
    gen = torch.Generator().manual_seed(0)
    X = torch.rand(a.n, a.d, generator=gen)
    y = torch.sin(3 * X[:, 0]) + X[:, 1] + 0.1 * torch.randn(a.n, generator=gen)
    X, y = X.to(_DEVICE), y.to(_DEVICE)
    likelihood = torchgp.likelihoods.GaussianLikelihood()
    model = ExactModel(X, y, likelihood, shard_cg=not a.replicated_cg).to(X.device)
    model.initialize(**{"covar_module.base_kernel.base_kernel.lengthscale": 0.5, "likelihood.noise": 0.01})
    mll = torchgp.mlls.ExactMarginalLogLikelihood(likelihood, model)
    dist.barrier()
    rss_start = _hwm_mib()
    t0, c0 = time.perf_counter(), time.process_time()
    cap = settings.max_cg_iterations(a.max_cg_iterations or settings.max_cg_iterations.value())
    with settings.max_cholesky_size(1), cap, settings.cg_nonconvergence("warn"):  # the iterative path at every n
        loss = -mll(model(X), y)
        t_fwd = time.perf_counter() - t0
        rss_forward = _hwm_mib()
        loss.backward()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {
        "loss": float(loss.detach()),
        "forward_s": round(t_fwd, 2),
        "wall_s": round(max(_gather(wall)), 2),
        # CPU seconds of each rank: on a machine shared with other jobs, the wall time an idle machine would
        # show (one core per thread) is about the largest of these divided by the threads per process.
        "cpu_s_per_rank": [round(c, 2) for c in _gather(cpu)],
        "grad_norm": float(torch.cat([p.grad.reshape(-1) for p in model.parameters()]).norm()),
        "rss_before_mll_mib_per_rank": [round(r) for r in _gather(rss_start)],
        "peak_rss_forward_mib_per_rank": [round(r) for r in _gather(rss_forward)],
        **_machine_control(),
    }


def _machine_control() -> dict:
    """Seconds of a fixed compute-bound and a fixed memory-bound job, run by every rank at once after the MLL.

    The machine's own ceiling for a speed-up by P processes is ``P x`` (one process's seconds) / (the concurrent
    ranks' seconds): below P where the processes share caches, memory bandwidth or a core's turbo. Compare the
    sharded MLL's speed-up with it, from a run with 1 process and one with P.
    """
    gen = torch.Generator().manual_seed(1)
    A = torch.randn(768, 768, generator=gen).to(_DEVICE)  # float32, in cache: compute-bound GEMMs
    big = torch.randn(2**24, generator=gen).to(_DEVICE)  # 64 MiB: a streaming pass is memory-bound
    out = torch.empty_like(big)
    dist.barrier()
    t0 = time.perf_counter()
    for _ in range(60):
        A @ A
    gemm = time.perf_counter() - t0
    dist.barrier()
    t0 = time.perf_counter()
    for _ in range(40):
        torch.mul(big, 1.0001, out=out)
    stream = time.perf_counter() - t0
    return {
        "control_gemm_s_per_rank": [round(v, 3) for v in _gather(gemm)],
        "control_stream_s_per_rank": [round(v, 3) for v in _gather(stream)],
    }


def bench_svgp(a) -> dict:
    gen = torch.Generator().manual_seed(0)
    X = torch.rand(a.n, a.d, generator=gen)
    y = torch.sin(4 * X[:, 0]) + torch.cos(3 * X[:, 1]) + 0.1 * torch.randn(a.n, generator=gen)
    device = _DEVICE
    model = SVGP(X[: a.m].clone()).to(device)  # the batches follow the model to its device in dist.fit
    likelihood = torchgp.likelihoods.GaussianLikelihood().to(device)
    elbo = torchgp.mlls.VariationalELBO(likelihood, model, num_data=a.n)
    loader = DataLoader(TensorDataset(X, y), batch_size=a.batch, shuffle=True)
    dist.barrier()
    t0, c0 = time.perf_counter(), time.process_time()
    result = dist.fit(elbo, loader, "adam", maxiter=a.epochs, lr=0.01)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {
        "epoch_s": round(max(_gather(wall)) / a.epochs, 2),
        "cpu_s_per_rank_per_epoch": [round(c / a.epochs, 2) for c in _gather(cpu)],
        "loss": result.loss,
    }


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["exact", "svgp"])
    p.add_argument("--num-data", dest="n", type=int, default=None, help="n; default 20000 (exact), 1000000 (svgp)")
    p.add_argument("--d", type=int, default=8)
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="cuda: NCCL, one GPU per process")
    p.add_argument("--m", type=int, default=256, help="inducing points (svgp)")
    p.add_argument("--batch", type=int, default=1024, help="global minibatch (svgp)")
    p.add_argument("--epochs", type=int, default=1, help="epochs (svgp)")
    p.add_argument("--max-cg-iterations", type=int, default=None, help="cap CG (a memory-only run at large n)")
    p.add_argument("--replicated-cg", action="store_true", help="CG replicated on every rank (exact; for comparison)")
    p.add_argument("--profile", action="store_true", help="print each rank's seconds per part (exact)")
    a = p.parse_args()
    a.n = a.n or (20_000 if a.what == "exact" else 1_000_000)
    torch.set_num_threads(a.threads)
    global _DEVICE
    if dist.launched_by_torchrun():
        dist.init(backend="nccl" if a.device == "cuda" else "gloo")
    _DEVICE = _device(a)
    global _TIMERS
    if a.profile:
        _TIMERS = _Timers()
        _TIMERS.install()
        _TIMERS.start()
    out = bench_exact(a) if a.what == "exact" else bench_svgp(a)
    rss = _gather(_peak_rss_mib())
    if dist.rank() == 0:
        record = {"what": a.what, "n": a.n, "d": a.d, "processes": dist.world_size(), "threads": a.threads}
        if a.what == "exact":
            record.update(cg="replicated" if a.replicated_cg else "row-split", max_cg_iterations=a.max_cg_iterations)
        record.update(device=a.device, **out)
        record["peak_rss_mib_per_rank"] = [round(r) for r in rss]
        print(json.dumps(record), flush=True)
    if _TIMERS is not None:  # one line per rank, in rank order
        for r in range(dist.world_size()):
            if r == dist.rank():
                print(json.dumps({"rank": r, "wall_cpu_calls_peakrss": _TIMERS.report()}), flush=True)
            dist.barrier()
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
