"""Rasmussen's Mauna Loa CO₂ kernel fitted by ``torchgp.fit`` and by GPyTorch + BoTorch's scipy L-BFGS-B.

Usage: ``python benchmarks/mauna_loa_fit.py [--n 1780] [--maxiter 1000] [--eval-repeats 3] [--threads 1] [--device cpu]
[--profile ROWS] [--no-fit] [--ftol 1e-9] [--torchgp-ftol TOL]``.

Data: the bundled weekly record (``torchgp.datasets.load_co2``, 2225 weeks), ``--n`` of them at evenly
spaced indices; x in years since the first week, y standardised. Kernel (R&W 2006, §5.4.3, eq. 5.15–5.19,
without the short-term noise kernel, whose role the Gaussian noise plays):

    k = s₁ RBF(ℓ₁) + s₂ RBF(ℓ₂) · Periodic(p, ℓ_p) + s₃ RQ(ℓ₃, α)        (+ σ² I)

Both libraries start from the same hyperparameters (ℓ₁ = 50, s₁ = 1, ℓ₂ = 100, p = 1, ℓ_p = 1,
s₂ = 0.1, ℓ₃ = 1, α = 1, s₃ = 0.05, σ² = 0.01; constant mean 0) and run scipy's L-BFGS-B on the raw
parameters to its own convergence (ftol 1e-9, gtol 1e-5): torchgp through ``torchgp.fit``; GPyTorch
1.15 through BoTorch 0.18's ``fit_gpytorch_mll_scipy`` (the optimiser behind ``fit_gpytorch_mll``), with
the Cholesky path forced (``max_cholesky_size``; GPyTorch would use CG above n = 800). Printed: wall time,
evaluations, final −MLL/n of each (evaluated by GPyTorch's code on the fitted values) and the time ratio, and the
evaluation (and second) at which each came within 1e-6 of the other's best loss, and the RQ component's α at
the end. That α keeps falling toward 0 while −MLL keeps decreasing slowly (torchgp: −2.39601 at ftol 1e-9, −2.39640 at
1e-11, −2.39645 after 1000 iterations at 1e-13): the model has no finite optimum, and where L-BFGS-B's ftol test
stops on that valley depends on rounding. ``--torchgp-ftol 1e-11`` lets torchgp run on, so the time at which it
first reaches GPyTorch's final value is printed (time to the same optimum);
first, one −MLL + gradient of each at the start values, timed interleaved (the fits run one after the other, so
on a shared machine their ratio also measures the load's changes). ``--profile ROWS`` prints torch.profiler's table
of one torchgp evaluation (the ROWS operators of most self CPU time) before the fits; ``--no-fit`` stops there.
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch

START = {
    "covar_module.kernels.0.outputscale": 1.0,
    "covar_module.kernels.0.base_kernel.lengthscale": 50.0,
    "covar_module.kernels.1.outputscale": 0.1,
    "covar_module.kernels.1.base_kernel.kernels.0.lengthscale": 100.0,
    "covar_module.kernels.1.base_kernel.kernels.1.period_length": 1.0,
    "covar_module.kernels.1.base_kernel.kernels.1.lengthscale": 1.0,
    "covar_module.kernels.2.outputscale": 0.05,
    "covar_module.kernels.2.base_kernel.lengthscale": 1.0,
    "covar_module.kernels.2.base_kernel.alpha": 1.0,
    "likelihood.noise_covar.noise": 0.01,
}


def co2(n: int, device):
    from torchgp.datasets import load_co2

    year, ppm = load_co2()
    idx = torch.linspace(0, year.numel() - 1, min(n, year.numel())).round().long()
    x, y = year[idx] - year[0], ppm[idx]
    return x.unsqueeze(-1).to(device), ((y - y.mean()) / y.std()).to(device)


def build(lib, X, y):
    """The composite model in ``lib`` (torchgp or gpytorch), at the start values above."""
    k = lib.kernels

    class MaunaLoa(lib.models.ExactGP):
        def __init__(self, lik):
            super().__init__(X, y, lik)
            self.mean_module = lib.means.ConstantMean()
            self.covar_module = (
                k.ScaleKernel(k.RBFKernel())
                + k.ScaleKernel(k.RBFKernel() * k.PeriodicKernel())
                + k.ScaleKernel(k.RQKernel())
            )

        def forward(self, x):
            return lib.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))

        def transform_inputs(self, X, input_transform=None):
            return X  # BoTorch's scipy fit asks every model for this hook; no input transform here

    lik = lib.likelihoods.GaussianLikelihood()
    model = MaunaLoa(lik).to(X)
    model.initialize(**START)
    model.mean_module.constant.data.fill_(0.0)
    return lib.mlls.ExactMarginalLogLikelihood(lik, model)


def _recording(mll) -> list[float]:
    """Wrap ``mll.forward`` so that every loss evaluation appends its −MLL/n to the returned list.

    The list's attribute ``times`` gets the ``time.perf_counter()`` of each evaluation, so the time at which a fit
    first reached a level can be read off.
    """
    losses, forward = _Trace(), mll.forward

    def recorded(*args, **kwargs):
        out = forward(*args, **kwargs)
        losses.append(-float(out.detach()))
        losses.times.append(time.perf_counter())
        return out

    mll.forward = recorded
    return losses


class _Trace(list):
    """−MLL/n per evaluation, with ``times`` (perf_counter per evaluation) and ``t0`` (the fit's start)."""

    def __init__(self):
        super().__init__()
        self.times: list[float] = []
        self.t0 = 0.0


def fit_torchgp(X, y, maxiter, ftol=1e-9):
    import torchgp

    mll = build(torchgp, X, y)
    losses = _recording(mll)
    t0 = losses.t0 = time.perf_counter()
    r = torchgp.fit(mll, maxiter=maxiter, progress=False, ftol=ftol, gtol=1e-5)
    elapsed = time.perf_counter() - t0
    return mll, elapsed, r.function_evals, losses, f"{r.stop_reason}, {r.iterations} iterations: {r.message}"


def fit_gpytorch(X, y, maxiter, ftol=1e-9):
    import gpytorch
    from botorch.optim.fit import fit_gpytorch_mll_scipy

    mll = build(gpytorch, X, y)
    mll.train()
    losses = _recording(mll)
    t0 = losses.t0 = time.perf_counter()
    with gpytorch.settings.max_cholesky_size(10**6):
        res = fit_gpytorch_mll_scipy(mll, options={"maxiter": maxiter, "ftol": ftol, "gtol": 1e-5})
    elapsed = time.perf_counter() - t0
    return mll, elapsed, len(losses), losses, f"{res.status}, {res.step} iterations: {res.message}"


def first_below(losses: list[float], level: float) -> int | None:
    """1-based index of the first evaluation whose loss is at most ``level`` (None if none is)."""
    return next((i + 1 for i, v in enumerate(losses) if v <= level), None)


def neg_mll_gpytorch(mll_any, X, y) -> float:
    """−MLL/n of the fitted hyperparameters, by GPyTorch's own code (same evaluation for both)."""
    import gpytorch

    ref = build(gpytorch, X, y)
    values = {name: p.detach() for name, p in mll_any.model.named_parameters()}
    ref.model.load_state_dict({**ref.model.state_dict(), **values}, strict=False)
    ref.train()
    with torch.no_grad(), gpytorch.settings.max_cholesky_size(10**6):
        return float(-ref(ref.model(X), y))


def per_evaluation(X, y, repeats: int) -> tuple[float, float]:
    """Median seconds of one −MLL + gradient at the start values, torchgp and GPyTorch run in turn (interleaved)."""
    import statistics

    import gpytorch

    import torchgp

    mlls = {"torchgp": build(torchgp, X, y), "gpytorch": build(gpytorch, X, y)}
    times = {k: [] for k in mlls}
    for _ in range(repeats):
        for name, mll in mlls.items():
            mll.train()
            t0 = time.perf_counter()
            with gpytorch.settings.max_cholesky_size(10**6):
                loss = -mll(mll.model(X), y)
                loss.backward()
            if str(X.device).startswith("cuda"):
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - t0)
    return statistics.median(times["torchgp"]), statistics.median(times["gpytorch"])


def profile_evaluation(X, y, rows: int) -> None:
    """torch.profiler's table of one torchgp −MLL + gradient at the start values (after two warm-up evaluations)."""
    from torch.profiler import ProfilerActivity, profile

    import torchgp

    mll = build(torchgp, X, y)
    mll.train()

    def evaluation():
        mll.zero_grad()
        (-mll(mll.model(X), y)).backward()

    for _ in range(2):
        evaluation()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        evaluation()
    table = prof.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total", row_limit=rows)
    print(table, flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--n", type=int, default=1780)
    p.add_argument("--maxiter", type=int, default=1000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--eval-repeats", type=int, default=3, help="interleaved single evaluations timed first")
    p.add_argument("--profile", type=int, default=0, help="print the profile of one torchgp evaluation (top ROWS)")
    p.add_argument("--no-fit", action="store_true", help="stop after the single evaluations (and the profile)")
    p.add_argument("--ftol", type=float, default=1e-9, help="L-BFGS-B's relative-reduction stop, both libraries")
    p.add_argument("--torchgp-ftol", type=float, default=None, help="torchgp's ftol if not --ftol (time to a level)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.set_default_dtype(torch.float64)
    warnings.simplefilter("ignore")  # jitter notes of both libraries at far trial points
    X, y = co2(a.n, a.device)
    print(f"torch {torch.__version__}, threads={torch.get_num_threads()}, device={a.device}, n={X.shape[0]}")
    if a.eval_repeats:
        e_tg, e_gp = per_evaluation(X, y, a.eval_repeats)
        print(
            f"one -MLL + gradient at the start (median of {a.eval_repeats}, interleaved): torchgp {e_tg * 1e3:.0f} ms, "
            f"GPyTorch {e_gp * 1e3:.0f} ms, ratio {e_tg / e_gp:.3f}",
            flush=True,
        )
    if a.profile:
        profile_evaluation(X, y, a.profile)
    if a.no_fit:
        return
    ftol_tg = a.ftol if a.torchgp_ftol is None else a.torchgp_ftol
    mll_tg, t_tg, ev_tg, loss_tg, how_tg = fit_torchgp(X, y, a.maxiter, ftol_tg)
    print(
        f"torchgp.fit: {t_tg:.1f} s, {ev_tg} evaluations, {t_tg / max(ev_tg, 1) * 1e3:.0f} ms each ({how_tg})",
        flush=True,
    )
    mll_gp, t_gp, ev_gp, loss_gp, how_gp = fit_gpytorch(X, y, a.maxiter, a.ftol)
    print(
        f"GPyTorch + BoTorch scipy L-BFGS-B: {t_gp:.1f} s, {ev_gp} evaluations, "
        f"{t_gp / max(ev_gp, 1) * 1e3:.0f} ms each ({how_gp})",
        flush=True,
    )
    v_tg, v_gp = neg_mll_gpytorch(mll_tg, X, y), neg_mll_gpytorch(mll_gp, X, y)
    print(
        f"final -MLL/n: torchgp {v_tg:.6f}, GPyTorch {v_gp:.6f} (torchgp − GPyTorch {v_tg - v_gp:+.1e}); "
        f"time ratio torchgp / GPyTorch {t_tg / t_gp:.3f}"
    )
    # how many evaluations each needed to come within 1e-6 (per point) of the other's final value
    # how many evaluations (and seconds) each needed to come within 1e-6 (per point) of the other's final value
    reached = {}
    for name, losses, other in (("torchgp", loss_tg, min(loss_gp)), ("GPyTorch", loss_gp, min(loss_tg))):
        k = first_below(losses, other + 1e-6)
        reached[name] = None if k is None else losses.times[k - 1] - losses.t0
        when = "never" if k is None else f"at evaluation {k} of {len(losses)}, {reached[name]:.1f} s"
        print(f"{name} within 1e-6 of the other's best -MLL/n ({other:.6f}): {when}")
    if reached["torchgp"] is not None:
        print(
            f"time to GPyTorch's final value: torchgp {reached['torchgp']:.1f} s against GPyTorch's {t_gp:.1f} s, "
            f"ratio {reached['torchgp'] / t_gp:.3f} (torchgp ftol {ftol_tg:g}, GPyTorch ftol {a.ftol:g})"
        )
    # The RQ component's α: a fit that keeps descending with α → 0 is in a valley with no finite optimum.
    for name, mll in (("torchgp", mll_tg), ("GPyTorch", mll_gp)):
        alpha = float(mll.model.covar_module.kernels[2].base_kernel.alpha.detach().reshape(-1)[0])
        print(f"{name}: RQ alpha at the end {alpha:.3e}")


if __name__ == "__main__":
    main()
