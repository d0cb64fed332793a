"""Small-n hyperparameter fitting as BO users run it: ``torchgp.fit`` vs BoTorch's ``fit_gpytorch_mll``.

Usage: ``python benchmarks/small_n_fit.py [--sizes 20 100 200] [--d 6] [--batch 32] [--repeats 3] [--batch-repeats 3]
[--threads 1] [--device cpu] [--no-fallback]``.

The same model in both libraries: constant mean, ``ScaleKernel(MaternKernel(nu=2.5, ard_num_dims=d))``,
Gaussian noise (lower bound 1e-6), no priors, no input/outcome transforms (the data are standardised
beforehand), float64, one thread. BoTorch fits the equivalent ``SingleTaskGP`` with its default
``fit_gpytorch_mll`` (scipy L-BFGS-B); torchgp fits with ``torchgp.fit`` (scipy L-BFGS-B). Both start
from the libraries' default initial values. Wall time to convergence (median of ``--repeats``, run
interleaved; CPU seconds by ``time.process_time`` beside it, which a loaded machine distorts less) and the
final exact MLL of each (GPyTorch's normalisation: divided by n), evaluated by the same code. The batch part fits ``--batch`` independent models of n = 100 in one call of
``torchgp.fit`` (``batch_shape=(B,)``) against a loop of B BoTorch fits, and beside it the linear-algebra floor of the rounds it took: torch's batched
Cholesky and ``cholesky_inverse`` of as many ``n × n`` matrices as the rounds evaluated members (each round evaluates
only the models still running), which any exact-gradient evaluation needs. Unless ``--no-fallback``, torchgp also
fits each problem through its fallback path (scipy's ``minimize`` for one model; one ``minimize`` per model in a
worker thread for the batch), the same iterates, to time the in-process L-BFGS-B driver against it.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch


def make_data(n: int, d: int, seed: int, dtype=torch.float64, device="cpu"):
    """X uniform on [0,1]^d, y a standardised smooth function plus noise of sd 0.1 (before standardising)."""
    g = torch.Generator().manual_seed(seed)
    X = torch.rand(n, d, generator=g, dtype=torch.float64)
    w = torch.randn(d, generator=g, dtype=torch.float64)
    y = torch.sin(3 * X @ w) + (X[:, 0] - 0.5) ** 2 + 0.1 * torch.randn(n, generator=g, dtype=torch.float64)
    y = (y - y.mean()) / y.std()
    return X.to(dtype=dtype, device=device), y.to(dtype=dtype, device=device)


def torchgp_model(X, y, batch_shape=torch.Size()):
    import torchgp

    d = X.shape[-1]

    class GP(torchgp.models.ExactGP):
        def __init__(self, lik):
            super().__init__(X, y, lik)
            self.mean_module = torchgp.means.ConstantMean(batch_shape=batch_shape)
            base = torchgp.kernels.MaternKernel(nu=2.5, ard_num_dims=d, batch_shape=batch_shape)
            self.covar_module = torchgp.kernels.ScaleKernel(base, batch_shape=batch_shape)

        def forward(self, x):
            return torchgp.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))

    lik = torchgp.likelihoods.GaussianLikelihood(
        noise_constraint=torchgp.constraints.GreaterThan(1e-6), batch_shape=batch_shape
    )
    model = GP(lik).to(X)
    return torchgp.mlls.ExactMarginalLogLikelihood(lik, model)


def botorch_model(X, y):
    import gpytorch
    from botorch.models import SingleTaskGP

    d = X.shape[-1]
    covar = gpytorch.kernels.ScaleKernel(gpytorch.kernels.MaternKernel(nu=2.5, ard_num_dims=d))
    lik = gpytorch.likelihoods.GaussianLikelihood(noise_constraint=gpytorch.constraints.GreaterThan(1e-6))
    model = SingleTaskGP(X, y.unsqueeze(-1), likelihood=lik, covar_module=covar, outcome_transform=None)
    return gpytorch.mlls.ExactMarginalLogLikelihood(lik, model).to(X)


def fit_torchgp(X, y):
    import torchgp

    mll = torchgp_model(X, y)
    torchgp.fit(mll, progress=False)
    return mll


def fit_botorch(X, y):
    from botorch.fit import fit_gpytorch_mll

    mll = botorch_model(X, y)
    fit_gpytorch_mll(mll)
    return mll


def exact_mll(mll, X, y) -> torch.Tensor:
    """The fitted model's exact MLL / n, ``(*batch)``, by the library's own code in train mode (no priors)."""
    mll.train()
    with torch.no_grad():
        return mll(mll.model(X), y if y.dim() == X.dim() - 1 else y)


def _driven(usable: bool):
    """``fit``'s L-BFGS-B through scipy's core driven in-process (True) or through ``minimize`` / threads (False)."""
    from torchgp.optim import _lbfgsb

    real = _driven.__dict__.setdefault("real", _lbfgsb.available)
    _lbfgsb.available = real if usable else (lambda: False)


def single(sizes, d, repeats, device, fallback):
    import gpytorch

    print(f"single models, d = {d}: median wall time of {repeats} fits, final MLL/n")
    for n in sizes:
        X, y = make_data(n, d, seed=n, device=device)
        fit_torchgp(X, y), fit_botorch(X, y)  # warm-up (imports, first-call costs)
        t_tg, t_bt, c_tg, c_bt, c_fb = [], [], [], [], []
        for _ in range(repeats):  # interleaved
            t0, c0 = time.perf_counter(), time.process_time()
            mll_tg = fit_torchgp(X, y)
            t_tg.append(time.perf_counter() - t0)
            c_tg.append(time.process_time() - c0)
            t0, c0 = time.perf_counter(), time.process_time()
            mll_bt = fit_botorch(X, y)
            t_bt.append(time.perf_counter() - t0)
            c_bt.append(time.process_time() - c0)
            if fallback:  # the same fit through scipy's minimize (the fallback where its core cannot be driven)
                _driven(False)
                c0 = time.process_time()
                fit_torchgp(X, y)
                c_fb.append(time.process_time() - c0)
                _driven(True)
        with gpytorch.settings.max_cholesky_size(10**9):
            v_tg, v_bt = float(exact_mll(mll_tg, X, y)), float(exact_mll(mll_bt, X, y))
        a, b = statistics.median(t_tg), statistics.median(t_bt)
        ca, cb = statistics.median(c_tg), statistics.median(c_bt)
        extra = f"; via minimize CPU {statistics.median(c_fb) * 1e3:.1f} ms" if c_fb else ""
        print(
            f"  n={n:4d}  torchgp {a * 1e3:8.1f} ms  botorch {b * 1e3:8.1f} ms  ratio {a / b:.2f}  "
            f"(CPU {ca * 1e3:.1f} / {cb * 1e3:.1f} ms, ratio {ca / cb:.2f}{extra})  "
            f"MLL torchgp {v_tg:.6f} botorch {v_bt:.6f} (diff {v_tg - v_bt:+.1e})",
            flush=True,
        )


def batched(batch, n, d, device, repeats, fallback):
    import gpytorch

    import torchgp

    data = [make_data(n, d, seed=1000 + i, device=device) for i in range(batch)]
    X = torch.stack([x for x, _ in data])
    y = torch.stack([t for _, t in data])
    fit_botorch(*data[0])  # warm-up
    torchgp.fit(torchgp_model(X[:2], y[:2], torch.Size([2])), progress=False)
    times = {"torchgp": [], "threads": [], "botorch": []}
    cpu = {"torchgp": [], "threads": [], "botorch": []}

    def timed(key, job):
        t0, c0 = time.perf_counter(), time.process_time()
        out = job()
        times[key].append(time.perf_counter() - t0)
        cpu[key].append(time.process_time() - c0)
        return out

    rounds = _count_members()
    for _ in range(repeats):  # interleaved
        mll_tg = torchgp_model(X, y, torch.Size([batch]))
        rounds.clear()
        r = timed("torchgp", lambda m=mll_tg: torchgp.fit(m, progress=False))
        members = list(rounds)
        if fallback:  # the same lockstep with one scipy minimize per model in a worker thread
            _driven(False)
            timed("threads", lambda: torchgp.fit(torchgp_model(X, y, torch.Size([batch])), progress=False))
            _driven(True)
        fitted = timed("botorch", lambda: [fit_botorch(Xi, yi) for Xi, yi in data])
    t_tg, t_bt = statistics.median(times["torchgp"]), statistics.median(times["botorch"])
    c_tg, c_bt = statistics.median(cpu["torchgp"]), statistics.median(cpu["botorch"])
    v_tg = exact_mll(mll_tg, X, y)
    with gpytorch.settings.max_cholesky_size(10**9):
        v_bt = torch.stack([exact_mll(m, Xi, yi) for m, (Xi, yi) in zip(fitted, data)])
    diff = v_tg - v_bt
    print(
        f"batch of {batch} models, n = {n}, d = {d}, median of {repeats}: torchgp one call {t_tg:.2f} s "
        f"({r.iterations} iterations, {r.function_evals} rounds), botorch loop {t_bt:.2f} s, ratio {t_tg / t_bt:.3f} "
        f"(CPU {c_tg:.2f} / {c_bt:.2f} s, ratio {c_tg / c_bt:.3f}); "
        "MLL torchgp − botorch per model: "
        f"min {float(diff.min()):+.1e}, median {float(diff.median()):+.1e}, max {float(diff.max()):+.1e}",
        flush=True,
    )
    floor = linalg_floor(members, n, device)
    print(
        f"  the rounds evaluated {sum(members)} members ({len(members)} rounds); their Cholesky factors and inverses "
        f"alone take {floor:.3f} s: floor / botorch loop {floor / t_bt:.3f}, torchgp / floor {t_tg / floor:.2f}",
        flush=True,
    )
    if fallback:
        t_th, c_th = statistics.median(times["threads"]), statistics.median(cpu["threads"])
        print(
            f"  the same lockstep on worker threads (scipy minimize per model): {t_th:.2f} s, CPU {c_th:.2f} s; "
            f"in-process L-BFGS-B states / threads: wall {t_tg / t_th:.3f}, CPU {c_tg / c_th:.3f}",
            flush=True,
        )


def _count_members() -> list[int]:
    """A list that each lockstep round of ``torchgp.fit`` appends its number of evaluated members to."""
    from torchgp.optim import _batched

    counts: list[int] = []
    call = _batched._Rounds.__call__

    def counted(self, asked):
        counts.append(len(asked))
        return call(self, asked)

    _batched._Rounds.__call__ = counted
    return counts


def linalg_floor(members: list[int], n: int, device, repeats: int = 3) -> float:
    """Seconds for what every exact evaluation of the rounds must do, a Cholesky factor and ``cholesky_inverse``
    (the gradient's ``K⁻¹``, R&W eq. 5.9) of each evaluated member's ``n × n`` matrix, batched as the rounds are."""
    g = torch.Generator().manual_seed(0)
    best = float("inf")
    for _ in range(repeats):
        total = 0.0
        for k in members:
            A = torch.randn(k, n, n, generator=g, dtype=torch.float64).to(device)
            K = A @ A.mT / n + torch.eye(n, dtype=torch.float64, device=device)
            t0 = time.perf_counter()
            torch.cholesky_inverse(torch.linalg.cholesky(K))
            total += time.perf_counter() - t0
        best = min(best, total)
    return best


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--sizes", type=int, nargs="*", default=[20, 100, 200])
    p.add_argument("--d", type=int, default=6)
    p.add_argument("--batch", type=int, default=32, help="models in the batched fit (0: skip)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch-repeats", type=int, default=3, help="interleaved repeats of the batch part")
    p.add_argument(
        "--no-fallback", action="store_true", help="skip torchgp's fits through scipy minimize / worker threads"
    )
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    warnings.simplefilter("ignore")  # BoTorch's input-scaling advice on the standardised data
    print(f"torch {torch.__version__}, threads={torch.get_num_threads()}, device={a.device}")
    single(a.sizes, a.d, a.repeats, a.device, not a.no_fallback)
    if a.batch:
        batched(a.batch, 100, a.d, a.device, a.batch_repeats, not a.no_fallback)


if __name__ == "__main__":
    main()
