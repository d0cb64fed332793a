"""VNNGP (NNVariationalStrategy) vs SVGP: epoch time and test NLPD, torchgp vs GPyTorch 1.15.2.

    python benchmarks/vnngp.py [--n 100000] [--d 4] [--k 16] [--batch 256] [--epochs 1] [--threads 1]
        [--device cpu|cuda] [--models vnngp svgp] [--libs torchgp gpytorch] [--gpytorch-neighbours native|torchgp]

Data: ``y = Σ sin(3 x_i) + 0.1 ε`` with ``x`` uniform on ``[0, 1]^d``; float32. One epoch of VNNGP is
one pass over its minibatch iterator (``strategy(x=None)``: q(f) at the batch's inducing points and
the stochastic KL over the same batch); SVGP uses 512 inducing points and minibatches of the same size.
Both libraries are trained with Adam (lr 0.01) for the same epochs from the same initial values. The epoch
time printed is the median over the epochs run.

GPyTorch without ``faiss`` builds VNNGP's sequential neighbour sets with one scikit-learn fit per training
point (O(n²) work: hours at n = 10⁵). ``--gpytorch-neighbours torchgp`` hands GPyTorch the sets built by
torchgp's ``NNUtil.build_sequential_nn_idx`` (the same exact k-nearest-neighbour sets), so that its training
epochs and predictions can be measured at that size; its build time is then not GPyTorch's.

Results (2-core shared CPU VM, 1 thread, float32, k = 16, batch 256, 2 epochs):

* n = 20 000, d = 4, VNNGP: epoch 0.29 s (torchgp) vs 0.29 s (GPyTorch); building the strategy (neighbour
  sets) 1.5 s vs 75 s; test NLPD after 2 epochs 3.12 vs 3.58.
* n = 100 000, d = 4 (torchgp only; GPyTorch's neighbour build did not finish in the time allowed):
  VNNGP epoch 3.2 s, test NLPD 2.48; SVGP (m = 512) epoch 19.5 s, test NLPD -0.64 (VNNGP needs many more
  epochs: its M variational parameters each see one minibatch per epoch).
* n = 100 000, d = 4, both libraries, ``--epochs 3 --gpytorch-neighbours torchgp`` (epochs interleaved,
  medians; load average 5–11 on the 2 cores, so absolute times are inflated, the ratios less so): VNNGP epoch
  9.9 s vs 10.2 s (0.92×), test NLPD 2.41 vs 2.53; SVGP epoch 49.9 s vs 75.6 s (0.66×), test NLPD -0.82 vs -0.82.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch


def _models(lib, X, k, batch):
    v = lib.variational

    class VNNGP(lib.models.ApproximateGP):
        def __init__(self):
            q = v.MeanFieldVariationalDistribution(X.shape[0])
            super().__init__(v.NNVariationalStrategy(self, X, q, k=k, training_batch_size=batch))
            self.mean_module = lib.means.ZeroMean()
            self.covar_module = lib.kernels.ScaleKernel(lib.kernels.RBFKernel(ard_num_dims=X.shape[-1]))

        def forward(self, x):
            return lib.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))

        def __call__(self, x, prior=False, **kwargs):  # GPyTorch's VNNGP tutorial: x=None draws a minibatch
            return self.variational_strategy(x=x, prior=prior, **kwargs)

    class SVGP(lib.models.ApproximateGP):
        def __init__(self, Z):
            q = v.CholeskyVariationalDistribution(Z.shape[0])
            super().__init__(v.VariationalStrategy(self, Z, q))
            self.mean_module = lib.means.ZeroMean()
            self.covar_module = lib.kernels.ScaleKernel(lib.kernels.RBFKernel(ard_num_dims=X.shape[-1]))

        def forward(self, x):
            return lib.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))

    return VNNGP(), SVGP(X[torch.randperm(X.shape[0])[:512]].clone())


def _nlpd(model, lik, Xt, yt):
    model.eval()
    lik.eval()
    with torch.no_grad():
        means, vars_ = [], []
        for s in range(0, Xt.shape[0], 1024):
            p = lik(model(Xt[s : s + 1024]))
            means.append(p.mean)
            vars_.append(p.variance)
        mu, var = torch.cat(means), torch.cat(vars_)
    model.train()
    lik.train()
    return (0.5 * (torch.log(2 * math.pi * var) + (yt - mu) ** 2 / var)).mean().item()


def setup(lib, X, y, args):
    """Both models of one library with their likelihood, ELBO and optimiser; and the time to build them."""
    torch.manual_seed(0)
    t0 = time.perf_counter()
    vnn, svgp = _models(lib, X, args.k, args.batch)
    build = time.perf_counter() - t0
    states = {}
    for name, model in (("vnngp", vnn), ("svgp", svgp)):
        if name not in args.models:
            continue
        model = model.to(args.device)
        lik = lib.likelihoods.GaussianLikelihood().to(args.device)
        mll = lib.mlls.VariationalELBO(lik, model, num_data=X.shape[0])
        opt = torch.optim.Adam([*model.parameters(), *lik.parameters()], lr=0.01)
        model.train()
        lik.train()
        states[name] = (model, lik, mll, opt)
    return build, states


def epoch(name, state, X, y, args) -> float:
    """One training epoch; its wall time in seconds."""
    model, _, mll, opt = state
    t0 = time.perf_counter()
    if name == "vnngp":
        for _ in range(model.variational_strategy._total_training_batches):
            opt.zero_grad()
            f = model(None)
            loss = -mll(f, y[model.variational_strategy.current_training_indices])
            loss.backward()
            opt.step()
    else:
        for idx in torch.randperm(X.shape[0], device=X.device).split(args.batch):
            opt.zero_grad()
            loss = -mll(model(X[idx]), y[idx])
            loss.backward()
            opt.step()
    if X.is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def _gpytorch_neighbours_from_torchgp():
    """Let GPyTorch's NNUtil build its sequential neighbour sets with torchgp's builder (same sets, see above)."""
    import gpytorch.utils.nearest_neighbors as gnn

    from torchgp.utils.nearest_neighbors import NNUtil

    def build(self, x):
        return NNUtil(self.k, self.dim, batch_shape=self.batch_shape).build_sequential_nn_idx(x).to(x.device)

    gnn.NNUtil.build_sequential_nn_idx = build


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--d", type=int, default=4)
    p.add_argument("--k", type=int, default=16)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--models", nargs="+", default=["vnngp", "svgp"], choices=["vnngp", "svgp"])
    p.add_argument("--libs", nargs="+", default=["torchgp", "gpytorch"], choices=["torchgp", "gpytorch"])
    p.add_argument("--gpytorch-neighbours", default="native", choices=["native", "torchgp"])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"threads {torch.get_num_threads()}, device {args.device}, float32, k = {args.k}, batch {args.batch}")
    g = torch.Generator().manual_seed(0)
    X = torch.rand(args.n + 2000, args.d, generator=g)
    y = torch.sin(3 * X).sum(-1) + 0.1 * torch.randn(args.n + 2000, generator=g)
    X, y = X.to(args.device), y.to(args.device)
    X, Xt, y, yt = X[: args.n], X[args.n :], y[: args.n], y[args.n :]
    import gpytorch

    import torchgp

    if args.gpytorch_neighbours == "torchgp":
        _gpytorch_neighbours_from_torchgp()
    libs = {name: {"torchgp": torchgp, "gpytorch": gpytorch}[name] for name in args.libs}
    builds, states = {}, {}
    for lname, lib in libs.items():
        builds[lname], states[lname] = setup(lib, X, y, args)
    times = {(lname, name): [] for lname in libs for name in states[lname]}
    for _ in range(args.epochs):  # epochs interleaved across libraries: both see the same machine load
        for lname in libs:
            for name, state in states[lname].items():
                times[lname, name].append(epoch(name, state, X, y, args))
    for lname in libs:
        print(f"{lname}: building both models (VNNGP neighbour sets) {builds[lname]:.1f} s")
        for name, (model, lik, _, _) in states[lname].items():
            t, nlpd = statistics.median(times[lname, name]), _nlpd(model, lik, Xt, yt)
            print(f"{lname:9s} {name:6s} n={args.n} d={args.d}: epoch {t:8.2f} s (median)  test NLPD {nlpd:.4f}")
    if len(libs) == 2:
        for name in args.models:
            ratios = [a / b for a, b in zip(times["torchgp", name], times["gpytorch", name])]
            print(f"{name}: epoch time torchgp / gpytorch = {statistics.median(ratios):.2f} (median over epochs)")


if __name__ == "__main__":
    main()
