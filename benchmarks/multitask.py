"""Exact Kronecker multitask GP (ICM): MLL forward + backward and prediction, torchgp vs GPyTorch vs dense.

Usage: ``python benchmarks/multitask.py [--sizes 2000x4 4000x8] [--repeats R] [--threads T] [--device cpu|cuda]
[--lmc]``.
The model is GPyTorch's multitask tutorial: ``MultitaskMean(ConstantMean)``, ``MultitaskKernel(RBFKernel, rank=1)``,
``MultitaskGaussianLikelihood(rank=0)``, float64, d = 2; both libraries get the same parameter values. Prediction is
the posterior mean and variance at 500 test points, the cached factor rebuilt each time. "dense" is one Cholesky
of the whole ``nt × nt`` matrix plus one solve (the floor of any method that forms it), run only while that matrix
fits in ``--dense-max-gb``. With ``--lmc``: one training step (ELBO forward + backward + Adam) of GPyTorch's LMC SVGP
tutorial model, t = 10 tasks, 5 latents, m = 256 inducing points, a minibatch of 1024, float32. Not run in CI.
"""

# ruff: noqa: B023  (the timing lambdas are called inside the iteration that defines them)
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import interleaved  # noqa: E402

import torchgp  # noqa: E402

DT = torch.float64
DEVICE = torch.device("cpu")  # set by --device


def make_data(n: int, t: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    X = torch.rand(n, 2, generator=g, dtype=DT)
    phase = torch.linspace(0, 3, t, dtype=DT)
    Y = torch.sin(4 * X[:, :1] + phase) * torch.cos(3 * X[:, 1:]) + 0.1 * torch.randn(n, t, generator=g, dtype=DT)
    return X.to(DEVICE), Y.to(DEVICE)


def build(lib, X, Y):
    t = Y.shape[-1]

    class ICM(lib.models.ExactGP):
        def __init__(self, x, y, likelihood):
            super().__init__(x, y, likelihood)
            self.mean_module = lib.means.MultitaskMean(lib.means.ConstantMean(), num_tasks=t)
            self.covar_module = lib.kernels.MultitaskKernel(lib.kernels.RBFKernel(), num_tasks=t, rank=1)

        def forward(self, x):
            return lib.distributions.MultitaskMultivariateNormal(self.mean_module(x), self.covar_module(x))

    model = ICM(X, Y, lib.likelihoods.MultitaskGaussianLikelihood(num_tasks=t)).to(DT)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _, p in sorted(model.named_parameters()):
            p.copy_(0.3 * torch.randn(p.shape, generator=g, dtype=DT))
    return model.to(DEVICE)


def mll_step(lib, model, X, Y):
    model.train()
    mll = lib.mlls.ExactMarginalLogLikelihood(model.likelihood, model)
    loss = -mll(model(X), Y)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    return loss.detach(), grads


def predict(lib, model, Xs):
    model.eval()
    if lib is torchgp:
        model._cache = None
    else:
        model.prediction_strategy = None
    with torch.no_grad():
        out = model(Xs)
        return out.mean, out.variance


def dense_floor(model, X, Y):
    """One Cholesky of the noisy ``nt × nt`` covariance and one solve, the covariance built by torchgp."""
    with torch.no_grad():
        model.train()
        noisy = model.likelihood(model(X))
        A = _kron_dense(noisy)
        L = torch.linalg.cholesky(A)
        return torch.cholesky_solve(Y.reshape(-1, 1), L)


def _kron_dense(noisy):
    with torchgp.settings.max_dense_memory(2**40):
        return noisy.lazy_covariance_matrix.to_dense()


def lmc_model(lib, t=10, latents=5, m=256, d=2):
    g = torch.Generator().manual_seed(0)
    Z = torch.rand(latents, m, d, generator=g).to(DEVICE)
    L = torch.Size([latents])

    class LMC(lib.models.ApproximateGP):
        def __init__(self):
            q = lib.variational.CholeskyVariationalDistribution(m, batch_shape=L)
            base = lib.variational.VariationalStrategy(self, Z, q, learn_inducing_locations=True)
            super().__init__(lib.variational.LMCVariationalStrategy(base, num_tasks=t, num_latents=latents))
            self.mean_module = lib.means.ConstantMean(batch_shape=L)
            self.covar_module = lib.kernels.ScaleKernel(lib.kernels.RBFKernel(batch_shape=L), batch_shape=L)

        def forward(self, x):
            return lib.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))

    model, lik = LMC().to(DEVICE), lib.likelihoods.MultitaskGaussianLikelihood(num_tasks=t).to(DEVICE)
    return model, lik, torch.optim.Adam([*model.parameters(), *lik.parameters()], lr=0.01)


def lmc_step(lib, model, lik, opt, x, y, num_data):
    opt.zero_grad()
    out = model(x)
    if lib is torchgp:  # the ELBO of Hensman et al. (2015) eq. 17 per datum, from the likelihood and the KL
        loss = -(
            lik.expected_log_prob(y, out).sum(-1) / x.shape[0] - model.variational_strategy.kl_divergence() / num_data
        )
    else:
        loss = -lib.mlls.VariationalELBO(lik, model, num_data=num_data)(out, y)
    loss.backward()
    opt.step()
    return loss.detach()


def run_lmc(repeats: int):
    import gpytorch

    g = torch.Generator().manual_seed(1)
    x = torch.rand(1024, 2, generator=g)
    y = torch.sin(4 * x[:, :1] + torch.linspace(0, 3, 10)) + 0.1 * torch.randn(1024, 10, generator=g)
    x, y = x.to(DEVICE), y.to(DEVICE)
    ours, theirs = lmc_model(torchgp), lmc_model(gpytorch)
    times = interleaved(
        _synced(
            {
                "torchgp": lambda: lmc_step(torchgp, *ours, x, y, 10**5),
                "gpytorch": lambda: lmc_step(gpytorch, *theirs, x, y, 10**5),
            }
        ),
        repeats,
    )
    print(
        f"LMC SVGP step (t=10, 5 latents, m=256, b=1024, float32): torchgp {times['torchgp'] * 1e3:.1f} ms, "
        f"gpytorch {times['gpytorch'] * 1e3:.1f} ms, torchgp/gpytorch {times['torchgp'] / times['gpytorch']:.2f}"
    )


def _synced(contenders: dict) -> dict:
    """Each timed callable followed by a device synchronisation on CUDA (kernels run asynchronously there)."""
    if DEVICE.type != "cuda":
        return contenders
    return {k: (lambda f=f: (f(), torch.cuda.synchronize())) for k, f in contenders.items()}


def _status_kib(field: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def _peak_rss_child(lib_name: str, n: int, t: int) -> None:
    """In a fresh process: one MLL + gradient, then print its peak resident memory above the baseline in MiB.

    Linux only: writing 5 to ``/proc/self/clear_refs`` resets the high-water mark ``VmHWM``.
    """
    import gpytorch

    lib = torchgp if lib_name == "torchgp" else gpytorch
    X, Y = make_data(n, t)
    model = build(lib, X, Y)
    mll_step(lib, model, X, Y)  # warm-up: lazily built state and allocator pools
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    base = _status_kib("VmRSS")
    mll_step(lib, model, X, Y)
    print(f"{(_status_kib('VmHWM') - base) / 1024:.0f}")


def peak_memory(n: int, t: int) -> dict:
    """Peak extra resident memory (MiB) of one MLL + gradient per library, each in its own process."""
    import subprocess

    out = {}
    for lib in ("torchgp", "gpytorch"):
        code = f"import runpy; m = runpy.run_path({__file__!r}); m['_peak_rss_child']({lib!r}, {n}, {t})"
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        out[lib] = float(res.stdout.strip().splitlines()[-1])
    return out


def main():
    import gpytorch

    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", nargs="+", default=["2000x4", "4000x8"])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--dense-max-gb", type=float, default=1.0)
    ap.add_argument("--lmc", action="store_true", help="time the LMC SVGP step instead")
    ap.add_argument("--memory", action="store_true", help="also report the peak memory of one MLL + gradient")
    args = ap.parse_args()
    global DEVICE
    DEVICE = torch.device(args.device)
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")  # GPyTorch's own warnings; this script is not library code
    if args.lmc:
        run_lmc(max(args.repeats, 5))
        return
    print(f"float64, {args.device}, {args.threads} thread(s), median of {args.repeats}")
    print(
        f"{'n':>6} {'t':>3} {'what':>10} {'torchgp s':>10} {'gpytorch s':>11} {'dense s':>9} {'gpytorch/torchgp':>17}"
    )
    for size in args.sizes:
        n, t = (int(v) for v in size.split("x"))
        X, Y = make_data(n, t)
        Xs = make_data(500, t, seed=3)[0]
        ours, theirs = build(torchgp, X, Y), build(gpytorch, X, Y)
        la, _ = mll_step(torchgp, ours, X, Y)
        lb, _ = mll_step(gpytorch, theirs, X, Y)
        ma, va = predict(torchgp, ours, Xs)
        mb, vb = predict(gpytorch, theirs, Xs)
        print(
            f"# n={n} t={t}: |Δloss| = {abs(la - lb).item():.2e}, |Δmean| = {(ma - mb).abs().max().item():.2e}, "
            f"|Δvar| = {(va - vb).abs().max().item():.2e}"
        )
        dense_gb = (n * t) ** 2 * 8 / 1e9
        for what, fa, fb in (
            ("mll+grad", lambda: mll_step(torchgp, ours, X, Y), lambda: mll_step(gpytorch, theirs, X, Y)),
            ("predict", lambda: predict(torchgp, ours, Xs), lambda: predict(gpytorch, theirs, Xs)),
        ):
            contenders = {"torchgp": fa, "gpytorch": fb}
            if what == "mll+grad" and dense_gb <= args.dense_max_gb:
                contenders["dense"] = lambda: dense_floor(ours, X, Y)
            times = interleaved(_synced(contenders), args.repeats)
            dense = (
                f"{times['dense']:9.3f}"
                if "dense" in times
                else f"{'-' if what != 'mll+grad' else format(dense_gb, '.1f') + ' GB':>9}"
            )
            print(
                f"{n:6d} {t:3d} {what:>10} {times['torchgp']:10.3f} {times['gpytorch']:11.3f} {dense} "
                f"{times['gpytorch'] / times['torchgp']:17.2f}"
            )
        if args.memory and DEVICE.type == "cpu":  # resident memory of the process: a CPU measure
            mem = peak_memory(n, t)
            print(
                f"# n={n} t={t}: peak extra memory of one MLL + gradient: torchgp {mem['torchgp']:.0f} MiB, gpytorch "
                f"{mem['gpytorch']:.0f} MiB; one n × n matrix is {n * n * 8 / 2**20:.0f} MiB, the nt × nt one "
                f"{(n * t) ** 2 * 8 / 2**20:.0f} MiB"
            )


if __name__ == "__main__":
    main()
