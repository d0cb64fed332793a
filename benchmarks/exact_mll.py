"""Exact GP marginal likelihood, forward + backward: torchgp vs bare Cholesky, autograd, GPyTorch, sklearn.

Usage: ``python benchmarks/exact_mll.py [--quick] [--repeats R] [--sizes 100 500 ...] [--dtypes float64 float32]
[--device cpu|cuda] [--threads T] [--clock wall|cpu] [--order shuffled|fixed] [--skip NAME ...] [--no-extras]``
(default one thread).
ScaleKernel(ARD RBF) on d = 4, noise 0.01; float64 and float32. Ratios are to the exact gradient's linear-algebra
floor, one ``torch.linalg.cholesky`` plus one ``torch.cholesky_inverse`` of the same matrix, measured in the same run
(``floor_torchgp`` is the same pair by torchgp's own routes, :func:`~torchgp.linalg.cholesky.psd_safe_cholesky` and
:func:`~torchgp.linalg.cholesky.cholesky_inverse`). ``--clock cpu`` times each call in CPU seconds of this process
(``time.process_time``), which a loaded machine disturbs less than wall time. Not run in CI.
"""

# ruff: noqa: B023  (the timing lambdas are called inside the iteration that defines them)
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import ard_rbf, data, gauss_const, interleaved, raw_params  # noqa: E402

from torchgp import settings  # noqa: E402
from torchgp.linalg import cholesky as _cholesky  # noqa: E402
from torchgp.linalg import inv_quad_logdet  # noqa: E402


def torchgp_mll(X, y, params):
    os_, ls, nz = params
    K = ard_rbf(X, os_, ls) + nz.exp() * torch.eye(X.shape[0], dtype=X.dtype)
    quad, logdet = inv_quad_logdet(K, y)
    return -0.5 * (quad + logdet) - gauss_const(X.shape[0])


def torchgp_step(X, y, params):
    return torch.autograd.grad(torchgp_mll(X, y, params), params)


def autograd_step(X, y, params):
    os_, ls, nz = params
    K = ard_rbf(X, os_, ls) + nz.exp() * torch.eye(X.shape[0], dtype=X.dtype)
    L = torch.linalg.cholesky(K)
    alpha = torch.cholesky_solve(y.unsqueeze(-1), L)
    mll = -0.5 * (y @ alpha.squeeze(-1)) - L.diagonal().log().sum() - gauss_const(X.shape[0])
    return torch.autograd.grad(mll, params)


def bare_cholesky(K):
    return torch.linalg.cholesky(K)


def floor(K):
    """The exact gradient's linear-algebra floor: one Cholesky and one ``cholesky_inverse`` (R&W eq. 5.9 needs K⁻¹)."""
    return torch.cholesky_inverse(torch.linalg.cholesky(K))


def floor_torchgp(K):
    """The same floor by torchgp's routes (LAPACK ``potrf`` / ``potri`` through scipy on CPU where they are faster)."""
    return _cholesky.cholesky_inverse(_cholesky.psd_safe_cholesky(K))


def with_torch_lapack(fn):
    """``fn`` with the Cholesky path's factorisation and inverse forced to torch's routines (no scipy LAPACK)."""

    def run():
        saved = _cholesky.POTRF_MIN_N, _cholesky.POTRI_MIN_N
        _cholesky.POTRF_MIN_N = _cholesky.POTRI_MIN_N = {}
        try:
            return fn()
        finally:
            _cholesky.POTRF_MIN_N, _cholesky.POTRI_MIN_N = saved

    return run


def synced(fn, device):
    """``fn`` followed by a device synchronisation (CUDA timings measure the work, not its launch)."""
    if str(device).startswith("cuda"):

        def run():
            out = fn()
            torch.cuda.synchronize()
            return out

        return run
    return fn


def model_setup(lib, X, y):
    """The benchmark's model written with ``lib``'s public API (torchgp or gpytorch: the same code)."""

    class Model(lib.models.ExactGP):
        def __init__(self, lik):
            super().__init__(X, y, lik)
            self.mean_module = lib.means.ZeroMean()
            self.covar_module = lib.kernels.ScaleKernel(lib.kernels.RBFKernel(ard_num_dims=4))

        def forward(self, x):
            return lib.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))

    lik = lib.likelihoods.GaussianLikelihood(noise_constraint=lib.constraints.GreaterThan(1e-6))
    model = Model(lik).to(X)
    model.covar_module.base_kernel.lengthscale = torch.tensor([0.5, 0.7, 0.9, 1.1], dtype=X.dtype, device=X.device)
    model.covar_module.outputscale = 1.0
    lik.noise = 0.01
    model.train()
    return model, lib.mlls.ExactMarginalLogLikelihood(lik, model)


def torchgp_setup(X, y):
    import torchgp

    return model_setup(torchgp, X, y)


def gpytorch_setup(X, y):
    import gpytorch

    return model_setup(gpytorch, X, y)


def torchgp_model_step(model, mll, X, y):
    model.zero_grad()
    loss = -mll(model(X), y) * X.shape[0]
    loss.backward()
    return loss


def gpytorch_step(model, mll, X, y, force_cholesky):
    import gpytorch

    model.zero_grad()
    with gpytorch.settings.max_cholesky_size(10**9 if force_cholesky else 800):
        loss = -mll(model(X), y) * X.shape[0]
        loss.backward()
    return loss


def sklearn_setup(X, y):
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel

    k = ConstantKernel(1.0) * RBF([0.5, 0.7, 0.9, 1.1]) + WhiteKernel(0.01)
    gpr = GaussianProcessRegressor(k, optimizer=None, alpha=0.0).fit(X.numpy(), y.numpy())
    return gpr, gpr.kernel_.theta.copy()


def interleaved_rotated(contenders: dict, repeats: int, clock: str = "wall", device="cpu", order: str = "shuffled"):
    """Median seconds of each callable over ``repeats`` rounds, each contender warmed just before it is timed.

    Every round runs the contenders in a fresh order (a shuffle seeded by the round number, so a run repeats
    exactly) and calls each one once untimed right before its timed call, so that no contender pays for following
    another, and Python's cyclic garbage collector is off during each timed call (as in ``timeit``: with a seeded
    order, its periodic collections would otherwise land on the same contender run after run). ``order="fixed"``
    keeps the dictionary's order and times without the extra warm-up call or the collector's pause, for comparison:
    there the contender right after the floor's bare factorisation times ≈ 0.1 ms slower at n = 100 than an
    identical one later in the round. ``clock="cpu"`` reads ``time.process_time`` (CPU seconds of this process),
    else wall time; the CUDA contenders synchronise before returning.
    """
    import gc
    import random
    import statistics
    import time

    read = time.process_time if clock == "cpu" and not str(device).startswith("cuda") else time.perf_counter
    names = list(contenders)
    for fn in contenders.values():
        fn()
    times = {k: [] for k in names}
    for r in range(repeats):
        turn = names[:] if order == "fixed" else random.Random(r).sample(names, len(names))
        for name in turn:
            fn = contenders[name]
            pause = order != "fixed" and gc.isenabled()
            if order != "fixed":
                fn()  # warm: this contender's own caches and buffers, not the previous contender's
            if pause:
                gc.disable()
            try:
                t0 = read()
                fn()
                times[name].append(read() - t0)
            finally:
                if pause:
                    gc.enable()
    return {k: statistics.median(v) for k, v in times.items()}


def run(sizes, dtypes, repeats, device="cpu", skip=(), clock="wall", order="shuffled"):
    rows = []
    for dtype in dtypes:
        for n in sizes:
            X, y = data(n, dtype)
            X, y = X.to(device), y.to(device)
            params = [p.detach().to(device).requires_grad_() for p in raw_params(dtype)]
            with torch.no_grad():
                K = ard_rbf(X, params[0], params[1]) + 0.01 * torch.eye(n, dtype=dtype, device=device)
            model, mll = gpytorch_setup(X, y)
            tg_model, tg_mll = torchgp_setup(X, y)
            c = {
                "floor": lambda: floor(K),
                "floor_torchgp": lambda: floor_torchgp(K),
                "torchgp_model": lambda: torchgp_model_step(tg_model, tg_mll, X, y),
                # the same call again: with a fair interleaving the two agree (a check on the measurement itself)
                "torchgp_model_twin": lambda: torchgp_model_step(tg_model, tg_mll, X, y),
                "torchgp_model_torchlapack": with_torch_lapack(lambda: torchgp_model_step(tg_model, tg_mll, X, y)),
                "gpytorch_cholesky": lambda: gpytorch_step(model, mll, X, y, True),
                "gpytorch_default": lambda: gpytorch_step(model, mll, X, y, False),
                "bare_cholesky": lambda: bare_cholesky(K),
                "torchgp_cholesky": lambda: torchgp_step(X, y, params),
                "autograd_cholesky": lambda: autograd_step(X, y, params),
            }
            if dtype == torch.float64 and device == "cpu":
                gpr, theta = sklearn_setup(X, y)
                c["sklearn"] = lambda: gpr.log_marginal_likelihood(theta, eval_gradient=True)
            c = {k: synced(fn, device) for k, fn in c.items() if k not in skip}
            with settings.max_cholesky_size(10**9), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                reps = repeats if n <= 1000 else max(1, repeats // 2)
                med = interleaved_rotated(c, reps, clock, device, order)
            base = med["floor"]
            line = f"{str(dtype)[6:]:8s} n={n:5d} " + " ".join(
                f"{k}={v * 1e3:.2f}ms({v / base:.2f}x)" for k, v in med.items()
            )
            if "torchgp_model_twin" in med and "torchgp_model" in med:
                line += f"  | twin/torchgp_model = {med['torchgp_model_twin'] / med['torchgp_model']:.2f}"
            if "gpytorch_cholesky" in med:
                line += f"  | torchgp/gpytorch_cholesky = {med['torchgp_model'] / med['gpytorch_cholesky']:.2f}"
            print(line, flush=True)
            rows.append(line)
            if "sklearn" in med:
                with settings.max_cholesky_size(10**9):
                    g = torch.cat([t.reshape(-1) for t in torchgp_step(X, y, params)]).numpy()
                lml, g_sk = gpr.log_marginal_likelihood(theta, eval_gradient=True)
                val = torchgp_mll(X, y, params).item()
                err_sk = np.abs(g - g_sk).max() / np.abs(g_sk).max()
                model.zero_grad()
                gpytorch_step(model, mll, X, y, True)
                g_gp = -torch.cat(
                    [
                        model.covar_module.raw_outputscale.grad.reshape(-1),
                        model.covar_module.base_kernel.raw_lengthscale.grad.reshape(-1),
                        model.likelihood.noise_covar.raw_noise.grad.reshape(-1),
                    ]
                ).numpy()
                # GPyTorch's raw params are softplus-transformed: compare values of the MLL instead of chains.
                print(
                    f"    grad rel. err vs sklearn {err_sk:.1e}; MLL torchgp {val:.6f} sklearn {lml:.6f} "
                    f"(rel {abs(val - lml) / abs(lml):.1e}); gpytorch raw-grad norm {np.linalg.norm(g_gp):.3e}"
                )
    return rows


def iterative_error(n=4000):
    X, y = data(n, torch.float64)
    params = raw_params(torch.float64)
    with settings.max_cholesky_size(10**9):
        g0 = torch.cat([t.reshape(-1) for t in torchgp_step(X, y, params)])
    os_, ls, nz = params
    from torchgp.linalg import AddedDiagOperator, DenseOperator

    with settings.max_cholesky_size(1):
        K = ard_rbf(X, os_, ls)
        q, ld = inv_quad_logdet(AddedDiagOperator(DenseOperator(K), nz.exp().expand(n)), y)
        g1 = torch.cat([t.reshape(-1) for t in torch.autograd.grad(-0.5 * (q + ld), params)])
    rel = ((g1 - g0).abs() / g0.abs()).max().item()
    print(f"iterative path, n={n} float64: max relative gradient error vs Cholesky = {rel:.2e}")
    return rel


def adam_step(n=100, repeats=50):
    """One Adam step of the same ExactGP model written with each library (the BO regime)."""
    X, y = data(n, torch.float64)
    model, mll = gpytorch_setup(X, y)
    tg_model, tg_mll = torchgp_setup(X, y)
    opt_g = torch.optim.Adam(model.parameters(), lr=0.01)
    opt_t = torch.optim.Adam(tg_model.parameters(), lr=0.01)

    def ours():
        opt_t.zero_grad()
        (-tg_mll(tg_model(X), y)).backward()
        opt_t.step()

    def theirs():
        opt_g.zero_grad()
        (-mll(model(X), y)).backward()
        opt_g.step()

    med = interleaved({"torchgp": ours, "gpytorch": theirs}, repeats)
    print(
        f"one Adam step, n={n} float64: torchgp {med['torchgp'] * 1e3:.2f} ms, gpytorch {med['gpytorch'] * 1e3:.2f} ms "
        f"(ratio {med['torchgp'] / med['gpytorch']:.2f})"
    )


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true", help="sizes 100, 500, 1000 and 3 repeats")
    p.add_argument("--sizes", type=int, nargs="*", default=[100, 500, 1000, 2000, 4000])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--dtypes", nargs="*", default=["float64", "float32"])
    p.add_argument("--skip", nargs="*", default=[], help="contenders to leave out, e.g. gpytorch_default sklearn")
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall", help="wall time, or CPU seconds (CPU only)")
    p.add_argument("--no-extras", action="store_true", help="skip the Adam-step and iterative-path checks")
    p.add_argument(
        "--order",
        choices=["shuffled", "fixed"],
        default="shuffled",
        help="contenders' order per round: shuffled (seeded) with a warm-up call before each timing, or fixed",
    )
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    sizes, repeats = ([100, 500, 1000], 3) if a.quick else (a.sizes, a.repeats)
    print(
        f"torch {torch.__version__}, threads={torch.get_num_threads()}, device={a.device}, clock={a.clock}; times are "
        "medians of forward+backward; ratios are to the floor = one Cholesky + one cholesky_inverse of the same matrix"
    )
    run(sizes, [getattr(torch, t) for t in a.dtypes], repeats, a.device, skip=set(a.skip), clock=a.clock, order=a.order)
    if a.device == "cpu" and not a.no_extras:
        adam_step()
        iterative_error()


if __name__ == "__main__":
    main()
