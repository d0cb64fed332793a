"""Exact GP on the iterative path at large n: one MLL + gradient (or a training run), wall time and peak RSS.

Usage::

    python benchmarks/large_n.py --n 100000 --threads 2                 # one MLL + gradient
    python benchmarks/large_n.py --n 20000 --threads 2 --check --peer   # + float64 closed-form gradient, GPyTorch
    python benchmarks/large_n.py --n 10000 --threads 2 --steps 20 --warm both   # Adam, warm vs cold CG starts
    python benchmarks/large_n.py --n 6000 --steps 15 --warm both --skip-logdet both   # + skip_logdet_forward
    python benchmarks/large_n.py --n 20000 --check --seeds 1 2 3 --probe-tol 1e-4 1e-2   # error over probe seeds
    python benchmarks/large_n.py --n 20000 --threads 1 --rank 800      # another preconditioner rank than the rule's

Model: constant mean, ScaleKernel(ARD RBF), Gaussian likelihood; X uniform on [0, 1]^d, lengthscale 0.5, noise
0.01, float32 (``--dtype``), ``max_cholesky_size(1)`` (the iterative path at every n). The kernel matrix is never held: products
and the backward run in tiles (``settings.kernel_block_size``). Printed: CG iterations, the preconditioner's rank,
forward / backward time and peak RSS (before any peer or reference runs); the CG line gives the iterations of the probe columns and of the data
column (the probes stop at ``settings.cg_probe_tolerance``, so the last iterations carry the data column alone).

``--check``: the float64 closed-form gradient (R&W eq. 5.9, dense Cholesky; O(n²) memory, 3 × 8n² bytes) and its
relative error. ``--peer``: GPyTorch 1.15's default MLL + gradient on the same model and data, in the same process
after torchgp (its time and the ratio; its memory shows in the process peak only). ``--steps S``: S Adam steps
(lr 0.01) from the same start, with CG warm starts on, off or both in turn (``--warm``), and with
``settings.skip_logdet_forward`` on, off or both (``--skip-logdet``; no Lanczos quadrature in the forward, and a
warm step runs only its warm columns): time, CG iterations and the final loss, evaluated cold with the full loss.
``--seeds S1 S2 ..`` (with ``--check``): the gradient's error over probe seeds (``deterministic_probes`` off), each
``--probe-tol`` value (``settings.cg_probe_tolerance``) in turn per seed: its mean and maximum, CG iterations, CPU s.
"""

from __future__ import annotations

import argparse
import copy
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torchgp  # noqa: E402
import torchgp.linalg.iterative as iterative  # noqa: E402
import torchgp.linalg.iterative_system as iterative_system  # noqa: E402
from torchgp import settings  # noqa: E402
from torchgp.linalg import warm_start  # noqa: E402

_STATS = {"cg_iterations": 0, "pcg_s": 0.0, "precond_s": 0.0}


def _recording(fn, key):
    """Wrap ``fn`` to add up what the iterative path did (CG iterations, preconditioner rank and time)."""

    def wrapped(*args, **kwargs):
        t0 = time.perf_counter()
        out = fn(*args, **kwargs)
        _STATS[f"{key}_s"] += time.perf_counter() - t0
        if key == "pcg":
            _STATS["cg_iterations"] += out[1].iterations
            steps = out[1].num_steps.reshape(-1, out[1].num_steps.shape[-1]).amax(0)
            _STATS["column_steps"] = (int(steps[1:].max()) if steps.numel() > 1 else 0, int(steps[0]))
        else:
            _STATS["rank"] = out.rank
        return out

    return wrapped


iterative.pcg = _recording(iterative.pcg, "pcg")
iterative_system.build_preconditioner = _recording(iterative_system.build_preconditioner, "precond")


def _reset_stats():
    _STATS.update(cg_iterations=0, pcg_s=0.0, precond_s=0.0)


def _model(lib, X, y, lengthscale):
    """What a user writes, with ``lib`` torchgp or gpytorch (the same code)."""

    class Model(lib.models.ExactGP):
        def __init__(self):
            likelihood = lib.likelihoods.GaussianLikelihood()
            super().__init__(X, y, likelihood)
            self.mean_module = lib.means.ConstantMean()
            self.covar_module = lib.kernels.ScaleKernel(lib.kernels.RBFKernel(ard_num_dims=X.shape[-1]))

        def forward(self, x):
            return lib.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))

    model = Model().to(device=X.device, dtype=X.dtype)
    model.initialize(**{"covar_module.base_kernel.lengthscale": lengthscale, "likelihood.noise": 0.01})
    return model, lib.mlls.ExactMarginalLogLikelihood(model.likelihood, model)


def _rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB → GiB (Linux)


def one_step(model, mll, X, y):
    """One -MLL + gradient on the iterative path; the loss, the gradient (flat) and the timings."""
    _reset_stats()
    model.zero_grad()
    t0, c0 = time.perf_counter(), time.process_time()
    with settings.max_cholesky_size(1):
        loss = -mll(model(X), y)
        t_fwd = time.perf_counter() - t0
        loss.backward()
    wall = time.perf_counter() - t0
    _STATS["cpu_s"] = time.process_time() - c0
    grad = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
    return loss.item(), grad, wall, t_fwd


def closed_form_gradient(model, X, y, block: int = 2048) -> torch.Tensor:
    r"""The gradient of -MLL/n in float64 by a dense Cholesky (R&W eq. 5.9), flat in ``model.parameters()`` order.

    With ``M = K⁻¹ - ααᵀ``: ``∂/∂θ = ⟨M, ∂K/∂θ⟩ / 2n`` (the kernel's θ, through autograd on row blocks of K),
    ``tr(M) ∂σ²/∂θ / 2n`` for the noise, ``-1ᵀα / n`` for the constant mean.
    """
    ref = copy.deepcopy(model).double()
    X64, y64 = X.double(), y.double()
    n = X64.shape[0]
    with torch.no_grad():
        K = ref.covar_module(X64).to_dense()
        K.diagonal().add_(ref.likelihood.noise.detach())
        L = torch.linalg.cholesky(K)
        del K
        r = (y64 - ref.mean_module.constant.detach()).unsqueeze(-1)
        alpha = torch.cholesky_solve(r, L)
        M = torch.cholesky_inverse(L)
        del L
        M.addmm_(alpha, alpha.mT, alpha=-1.0)
    ref.zero_grad()
    for s in range(0, n, block):
        Kb = ref.covar_module(X64[s : s + block], X64).to_dense()
        ((M[s : s + block] * Kb).sum() / (2 * n)).backward()
    tail = ref.likelihood.noise.squeeze() * M.diagonal().sum() / (2 * n) - ref.mean_module.constant * alpha.sum() / n
    tail.backward()
    return torch.cat([p.grad.reshape(-1) for p in ref.parameters()]).float()


def gpytorch_step(X, y, lengthscale):
    import gpytorch

    model, mll = _model(gpytorch, X, y, lengthscale)
    t0, c0 = time.perf_counter(), time.process_time()
    loss = -mll(model(X), y)
    loss.backward()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return wall, cpu, torch.cat([p.grad.reshape(-1) for p in model.parameters()])


def train(X, y, lengthscale, steps: int, warm: bool, skip: bool = False):
    """``steps`` Adam steps (lr 0.01) with warm starts and ``skip_logdet_forward`` on or off: wall time, CPU time,
    final loss (cold, full), total CG iterations."""
    warm_start.cache.clear()
    model, mll = _model(torchgp, X, y, lengthscale)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    iterations = 0
    t0, c0 = time.perf_counter(), time.process_time()
    with settings.cg_warm_start(warm), settings.skip_logdet_forward(skip), settings.max_cholesky_size(1):
        for step in range(1, steps + 1):
            _reset_stats()
            opt.zero_grad()
            loss = -mll(model(X), y)
            loss.backward()
            opt.step()
            iterations += _STATS["cg_iterations"]
            if step % 10 == 0 and step < steps:  # progress of a long run: wall and CPU so far, CG iterations
                print(
                    f"  step {step}: wall {time.perf_counter() - t0:.1f} s, CPU {time.process_time() - c0:.1f} s, "
                    f"{iterations} CG iterations",
                    flush=True,
                )
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    with settings.cg_warm_start(False), settings.max_cholesky_size(1), torch.no_grad():
        final = (-mll(model(X), y)).item()  # the final loss by a cold evaluation, the same for both runs
    return wall, cpu, final, iterations


def _probe_tol(value):
    return settings.cg_probe_tolerance(value if value is not None else settings.cg_probe_tolerance.value())


def reference(a, model, X, y) -> torch.Tensor:
    """The float64 closed-form gradient, cached in ``a.ref`` (auto: the temp dir, by n, d, ℓ)."""
    if a.ref == "auto":
        a.ref = str(Path(tempfile.gettempdir()) / f"torchgp_large_n_grad_n{a.n}_d{a.d}_l{a.lengthscale}.pt")
    if Path(a.ref).exists():
        return torch.load(a.ref)
    ref = closed_form_gradient(model, X, y)
    torch.save(ref, a.ref)
    return ref


def spread(a, head, model, mll, X, y):
    """The gradient's error over probe seeds, every ``--probe-tol`` in turn per seed (interleaved): CG iterations,
    CPU seconds and the error's mean / max, for the same model and data."""
    ref = reference(a, model, X, y)
    rows = {tol: [] for tol in a.probe_tol}
    for seed in a.seeds:
        for tol in a.probe_tol:
            torch.manual_seed(seed)
            with settings.deterministic_probes(False), _probe_tol(tol):
                _, grad, wall, _ = one_step(model, mll, X, y)
            err = ((grad - ref).norm() / ref.norm()).item()
            rows[tol].append((err, _STATS["cg_iterations"], _STATS["cpu_s"], wall))
            print(
                f"{head} probe_tol={tol} seed={seed}: gradient error {err:.2e}, CG {_STATS['cg_iterations']} "
                f"iterations, CPU {_STATS['cpu_s']:.1f} s, wall {wall:.1f} s",
                flush=True,
            )
    for tol, r in rows.items():
        errs = torch.tensor([e for e, *_ in r])
        print(
            f"{head} probe_tol={tol}: {len(r)} seeds, gradient error mean {errs.mean():.2e} (rms "
            f"{errs.square().mean().sqrt():.2e}, max {errs.max():.2e}), CG iterations "
            f"{sorted({i for _, i, _, _ in r})}, median CPU {torch.tensor([c for *_, c, _ in r]).median():.1f} s, "
            f"peak RSS {_rss_gib():.2f} GiB",
            flush=True,
        )


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--d", type=int, default=8)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--lengthscale", type=float, default=0.5)
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--probes", type=int, default=None, help="settings.num_trace_samples (default 32)")
    p.add_argument("--max-rank", type=int, default=None, help="settings.max_preconditioner_size (default 4000)")
    p.add_argument("--cg-tol", type=float, default=None, help="settings.cg_tolerance (default 1e-4)")
    p.add_argument(
        "--rank", type=int, default=None, help="preconditioner rank instead of the rule max(200, ⌈√(160 n)⌉)"
    )
    p.add_argument(
        "--probe-tol",
        type=float,
        nargs="+",
        default=[None],
        help="settings.cg_probe_tolerance, one or more (each run in turn per seed; default: the setting's default)",
    )
    p.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=None,
        help="with --check: probe seeds (deterministic_probes off, torch.manual_seed(s)) for the error's spread",
    )
    p.add_argument("--check", action="store_true", help="float64 closed-form gradient and its relative error")
    p.add_argument(
        "--ref",
        default="auto",
        help="file to keep the closed-form gradient in, reused when present (auto: in the temp dir, by n, d, ℓ)",
    )
    p.add_argument("--peer", action="store_true", help="GPyTorch's default MLL + gradient in the same run")
    p.add_argument("--steps", type=int, default=0, help="Adam steps (0: one MLL + gradient)")
    p.add_argument("--warm", choices=["on", "off", "both"], default="both", help="CG warm starts in --steps runs")
    p.add_argument(
        "--skip-logdet", choices=["on", "off", "both"], default="off", help="skip_logdet_forward in --steps runs"
    )
    a = p.parse_args()
    if a.rank is not None:  # the rule's value replaced (still capped by settings.max_preconditioner_size)
        iterative_system.preconditioner_rank = lambda n: min(a.rank, int(settings.max_preconditioner_size.value()))
    torch.set_num_threads(a.threads)
    gen = torch.Generator().manual_seed(0)
    X = torch.rand(a.n, a.d, generator=gen)
    y = torch.sin(3 * X[:, 0]) + X[:, 1] + 0.1 * torch.randn(a.n, generator=gen)
    X, y = X.to(a.device, getattr(torch, a.dtype)), y.to(a.device, getattr(torch, a.dtype))
    head = f"n={a.n} d={a.d} {a.dtype} threads={torch.get_num_threads()} device={a.device}"
    levers = {"probes": a.probes, "max_rank": a.max_rank, "rank": a.rank, "cg_tol": a.cg_tol}
    head += "".join(f" {k}={v}" for k, v in levers.items() if v is not None)
    with (
        settings.num_trace_samples(a.probes or settings.num_trace_samples.value()),
        settings.max_preconditioner_size(a.max_rank or settings.max_preconditioner_size.value()),
        settings.cg_tolerance(a.cg_tol or settings.cg_tolerance.value()),
    ):
        if a.steps:
            warms = ("off", "on") if a.warm == "both" else (a.warm,)
            skips = ("off", "on") if a.skip_logdet == "both" else (a.skip_logdet,)
            for skip, mode in [(s, w) for s in skips for w in warms]:
                wall, cpu, final, its = train(X, y, a.lengthscale, a.steps, mode == "on", skip == "on")
                print(
                    f"{head}: {a.steps} Adam steps, warm starts {mode}, skip_logdet_forward {skip}: "
                    f"wall {wall:.1f} s ({wall / a.steps:.2f} s "
                    f"per step; CPU {cpu:.1f} s), {its} CG iterations, final -MLL/n {final:.5f}, peak RSS {_rss_gib():.2f} GiB",
                    flush=True,
                )
            return
        model, mll = _model(torchgp, X, y, a.lengthscale)
        if a.seeds:
            return spread(a, head, model, mll, X, y)
        with _probe_tol(a.probe_tol[0]):
            loss, grad, wall, t_fwd = one_step(model, mll, X, y)
    rss = _rss_gib()
    print(
        f"{head}: -MLL/n={loss:.5f}, |grad|={grad.norm().item():.4f}, wall {wall:.1f} s (forward {t_fwd:.1f} s, "
        f"backward {wall - t_fwd:.1f} s; CPU {_STATS['cpu_s']:.1f} s), CG {_STATS['cg_iterations']} iterations in {_STATS['pcg_s']:.1f} s "
        f"(probes {_STATS['column_steps'][0]}, data column {_STATS['column_steps'][1]}), "
        f"preconditioner rank {_STATS.get('rank')} in {_STATS['precond_s']:.1f} s, peak RSS {rss:.2f} GiB",
        flush=True,
    )
    if a.check:
        ref = reference(a, model, X, y)
        rel = (grad - ref).norm() / ref.norm()
        worst = ((grad - ref).abs() / ref.abs().clamp_min(1e-3 * ref.abs().max())).max()
        print(f"  gradient vs float64 closed form: {rel:.2e} relative (norm), worst entry {worst:.2e}", flush=True)
    if a.peer:
        t_gp, c_gp, g_gp = gpytorch_step(X, y, a.lengthscale)
        msg = (
            f"  GPyTorch 1.15 default: {t_gp:.1f} s (CPU {c_gp:.1f} s); torchgp / GPyTorch = {wall / t_gp:.2f} "
            f"(CPU {_STATS['cpu_s'] / c_gp:.2f})"
        )
        if a.check:
            msg += f"; GPyTorch gradient vs closed form {(g_gp - ref).norm() / ref.norm():.2e}"
        print(msg, flush=True)


if __name__ == "__main__":
    main()
