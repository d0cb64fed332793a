"""The Bayesian-optimisation loop: ``torchgp.bo.minimize`` against BoTorch 0.18's standard loop.

Usage: ``python benchmarks/bo_vs_botorch.py [--problems branin hartmann6 ackley10] [--seeds 10] [--iters 30]
[--restarts 4] [--raw-samples 128] [--threads 1] [--device cpu] [--cold]``.

Both loops minimise the same function (BoTorch's ``test_functions``, evaluated in float64) on the unit
cube mapped to its bounds, from the same initial design (2d + 1 scrambled Sobol points of
``SobolEngine(d, scramble=True, seed=seed)``, as ``torchgp.bo.minimize`` draws them), with the same budget
(``--iters`` evaluations beyond it) and the same acquisition-optimiser settings (``--restarts`` starts from
``--raw-samples`` raw points, q = 1):

- torchgp: ``torchgp.bo.minimize(f, bounds, n_init=2d+1, n_iter=iters, acquisition="logei")`` (its
  ``BOModel``: Matérn-5/2 ARD with Gamma priors, fitted by ``torchgp.fit`` from the previous round's optimum,
  LogEI maximised through one closed-form posterior snapshot per round); ``--cold`` adds the same loop with
  ``warm_start=False`` (every fit from the defaults, as BoTorch's) as a third contender;
- BoTorch: ``SingleTaskGP`` (its defaults, ``Standardize`` outcome transform) fitted by
  ``fit_gpytorch_mll``, ``qLogNoisyExpectedImprovement`` over the observed points, ``optimize_acqf``.

Printed per problem: the median over seeds of the best value found and of the simple regret
(best − optimum), and the median wall time per BO iteration (fit + acquisition optimisation + one
evaluation), with their ratio, and the same in CPU seconds (``time.process_time``); then each seed's regret.
The BO runs on CPU; ``--device cuda`` moves BoTorch's tensors and the objective's there (torchgp's loop keeps
its own device choice: CPU).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
import warnings

import torch


def problem(name: str):
    """``(BoTorch test function, its optimum, d)``."""
    from botorch.test_functions import Ackley, Branin, Hartmann

    fn = {"branin": lambda: Branin(), "hartmann6": lambda: Hartmann(dim=6), "ackley10": lambda: Ackley(dim=10)}
    f = fn[name]()
    return f, float(f.optimal_value), f.dim


def initial_design(d: int, n: int, seed: int) -> torch.Tensor:
    """The ``(n, d)`` unit-cube design ``torchgp.bo.minimize`` starts from."""
    return torch.quasirandom.SobolEngine(d, scramble=True, seed=seed).draw(n, dtype=torch.float64)


def run_torchgp(f, d, iters, seed, restarts, raw_samples, warm_start=True):
    import torchgp

    bounds = f.bounds.to(torch.float64)
    t0, c0 = time.perf_counter(), time.process_time()
    res = torchgp.bo.minimize(
        lambda x: float(f(x.unsqueeze(0))),
        bounds,
        n_init=2 * d + 1,
        n_iter=iters,
        seed=seed,
        num_restarts=restarts,
        raw_samples=raw_samples,
        warm_start=warm_start,
    )
    it = max(iters, 1)
    return res.fun, (time.perf_counter() - t0) / it, (time.process_time() - c0) / it


def run_botorch(f, d, iters, seed, restarts, raw_samples, device):
    from botorch.acquisition.logei import qLogNoisyExpectedImprovement
    from botorch.fit import fit_gpytorch_mll
    from botorch.models import SingleTaskGP
    from botorch.models.transforms.outcome import Standardize
    from botorch.optim import optimize_acqf
    from gpytorch.mlls import ExactMarginalLogLikelihood

    tkw = {"dtype": torch.float64, "device": device}
    f = copy.deepcopy(f).to(**tkw)  # the test function's constants (Hartmann's A, P) on the device too
    lower, width = f.bounds[0].to(**tkw), (f.bounds[1] - f.bounds[0]).to(**tkw)
    unit = torch.stack([torch.zeros(d, **tkw), torch.ones(d, **tkw)])
    torch.manual_seed(seed)
    t0, c0 = time.perf_counter(), time.process_time()
    U = initial_design(d, 2 * d + 1, seed).to(**tkw)
    Y = torch.stack([f(lower + width * u.unsqueeze(0)) for u in U]).reshape(-1, 1).to(**tkw)
    for _ in range(iters):
        model = SingleTaskGP(U, -Y, outcome_transform=Standardize(m=1))  # BoTorch maximises
        fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model))
        acqf = qLogNoisyExpectedImprovement(model, X_baseline=U)
        u_next, _ = optimize_acqf(acqf, unit, q=1, num_restarts=restarts, raw_samples=raw_samples)
        y_next = f(lower + width * u_next).reshape(1, 1).to(**tkw)
        U, Y = torch.cat([U, u_next]), torch.cat([Y, y_next])
    it = max(iters, 1)
    return float(Y.min()), (time.perf_counter() - t0) / it, (time.process_time() - c0) / it


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--problems", nargs="*", default=["branin", "hartmann6", "ackley10"])
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--iters", type=int, default=30)
    p.add_argument("--restarts", type=int, default=4)
    p.add_argument("--raw-samples", type=int, default=128)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu", help="cpu or cuda (BoTorch's tensors)")
    p.add_argument("--cold", action="store_true", help="also run torchgp without warm-started fits")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    warnings.simplefilter("ignore")  # BoTorch's and torchgp's numerical advice would flood the table
    print(
        f"torch {torch.__version__}, threads={torch.get_num_threads()}, device={a.device}, seeds={a.seeds}, "
        f"iterations={a.iters}, restarts={a.restarts}, raw_samples={a.raw_samples}"
    )
    print(
        "problem     | torchgp best (regret)  | BoTorch best (regret)  | s/iter torchgp | s/iter BoTorch | ratio "
        "| CPU s/iter torchgp / BoTorch, ratio"
    )
    for name in a.problems:
        f, optimum, d = problem(name)
        rows = {"torchgp": [], "botorch": []} | ({"cold": []} if a.cold else {})
        run_torchgp(f, d, 1, 0, a.restarts, a.raw_samples)  # warm-up: imports and first-call costs of both
        run_botorch(f, d, 1, 0, a.restarts, a.raw_samples, a.device)
        for seed in range(a.seeds):  # interleaved: each seed runs every loop
            rows["torchgp"].append(run_torchgp(f, d, a.iters, seed, a.restarts, a.raw_samples))
            rows["botorch"].append(run_botorch(f, d, a.iters, seed, a.restarts, a.raw_samples, a.device))
            if a.cold:
                rows["cold"].append(run_torchgp(f, d, a.iters, seed, a.restarts, a.raw_samples, warm_start=False))
        best = {k: statistics.median(v[0] for v in r) for k, r in rows.items()}
        per = {k: statistics.median(v[1] for v in r) for k, r in rows.items()}
        cpu = {k: statistics.median(v[2] for v in r) for k, r in rows.items()}
        print(
            f"{name:11s} | {best['torchgp']:10.4g} ({best['torchgp'] - optimum:8.2e}) "
            f"| {best['botorch']:10.4g} ({best['botorch'] - optimum:8.2e}) "
            f"| {per['torchgp']:14.3f} | {per['botorch']:14.3f} | {per['torchgp'] / per['botorch']:.2f}  "
            f"| {cpu['torchgp']:.3f} / {cpu['botorch']:.3f}, {cpu['torchgp'] / cpu['botorch']:.2f}",
            flush=True,
        )
        if a.cold:
            print(
                f"{'  cold fits':11s} | {best['cold']:10.4g} ({best['cold'] - optimum:8.2e}) | {'':22s} "
                f"| {per['cold']:14.3f} | {'':14s} | {per['cold'] / per['botorch']:.2f}  "
                f"| {cpu['cold']:.3f} / {cpu['botorch']:.3f}, {cpu['cold'] / cpu['botorch']:.2f}",
                flush=True,
            )
        for k, r in rows.items():  # the seeds' regrets, to judge the medians' spread
            print(f"    regret per seed, {k}: " + " ".join(f"{v[0] - optimum:.2g}" for v in r), flush=True)


if __name__ == "__main__":
    main()
