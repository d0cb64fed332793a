"""Sharded exact GP on 2 gloo ranks equals the single-process iterative path (and Cholesky, to its tolerance)."""

from __future__ import annotations

import torch

import torchgp
from tests._tol import tol
from tests.distributed import _spawn
from torchgp.linalg import KernelOperator
from torchgp.linalg.blockwise import kernel_matmul_nograd

N, D, STEPS = 240, 2, 3


class _GP(torchgp.models.ExactGP):
    def __init__(self, X, y, likelihood, sharded):
        super().__init__(X, y, likelihood)
        self.mean_module = torchgp.means.ConstantMean()
        kernel = torchgp.kernels.ScaleKernel(torchgp.kernels.RBFKernel(ard_num_dims=D))
        self.covar_module = torchgp.distributed.ShardedKernel(kernel) if sharded else kernel

    def forward(self, x):
        return torchgp.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))


def _data():
    g = torch.Generator().manual_seed(3)
    X = torch.rand(N, D, generator=g, dtype=torch.float64) * 4 - 2
    y = torch.sin(2 * X).sum(-1) + 0.1 * torch.randn(N, generator=g, dtype=torch.float64)
    Xs = torch.rand(7, D, generator=g, dtype=torch.float64) * 4 - 2
    return X, y, Xs


def _experiment(sharded: bool, cholesky: bool = False) -> dict:
    """Loss and gradients at the initial values, predictions, and parameters after a few Adam steps."""
    torch.manual_seed(0)
    X, y, Xs = _data()
    lik = torchgp.likelihoods.GaussianLikelihood()
    model = _GP(X, y, lik, sharded).double()
    model.likelihood.noise = 0.05
    mll = torchgp.mlls.ExactMarginalLogLikelihood(lik, model)
    size = 10**6 if cholesky else 0
    # 64-point tiles: 10 tiles on and above the diagonal, so both ranks get a share.
    with torchgp.settings.max_cholesky_size(size), torchgp.settings.kernel_block_size(64):
        model.train()
        loss = -mll(model(X), y)
        loss.backward()
        grads = [p.grad.clone() for p in model.parameters()]
        model.eval()
        with torch.no_grad():
            pred = lik(model(Xs))
            mean, var = pred.mean.clone(), pred.variance.clone()
        # An unmodified training loop.
        model.train()
        opt = torch.optim.Adam(model.parameters(), lr=0.1)
        for _ in range(STEPS):
            opt.zero_grad()
            step_loss = -mll(model(X), y)
            step_loss.backward()
            opt.step()
        params = [p.detach().clone() for p in model.parameters()]
        # torchgp.fit's L-BFGS-B: the same loss and gradients on every rank, so the same steps.
        torchgp.fit(mll, maxiter=3, progress=False)
        lbfgs = [p.detach().clone() for p in model.parameters()]
    return {"loss": loss.detach(), "grads": grads, "mean": mean, "var": var, "params": params, "lbfgs": lbfgs}


class _CountingRBF(torchgp.kernels.RBFKernel):
    """RBF that counts the kernel entries it evaluates."""

    entries = 0

    def forward(self, x1, x2, **params):
        out = super().forward(x1, x2, **params)
        _CountingRBF.entries += out.numel()
        return out


def _product(sharded: bool):
    """``K V`` by tiles, and how many kernel entries this process evaluated for it."""
    X, _, _ = _data()
    kernel = torchgp.distributed.ShardedKernel(_CountingRBF()) if sharded else _CountingRBF()
    V = torch.randn(N, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    _CountingRBF.entries = 0
    with torchgp.settings.kernel_block_size(64):
        KV = kernel_matmul_nograd(KernelOperator(kernel, X, X), V)
    return KV, _CountingRBF.entries


def _worker(rank, world_size):
    return {**_experiment(sharded=True), "product": _product(sharded=True)}


def _close(a, b, rtol):
    torch.testing.assert_close(a, b, rtol=rtol, atol=rtol * 1e-3)


def test_sharded_equals_single_process_iterative_and_cholesky(tmp_path):
    ranks = _spawn.run(_worker, tmp_path)
    single = _experiment(sharded=False)
    rtol = tol(torch.float64, loose=100)["rtol"]  # 1e-6, as the sharded path only reorders sums
    for out in ranks:
        _close(out["loss"], single["loss"], rtol)
        for g, g_ref in zip(out["grads"], single["grads"]):
            _close(g, g_ref, rtol)
        _close(out["mean"], single["mean"], rtol)
        _close(out["var"], single["var"], rtol)
        for p, p_ref in zip(out["params"] + out["lbfgs"], single["params"] + single["lbfgs"]):
            _close(p, p_ref, rtol)
    # Each rank evaluates its share of the kernel entries (10 tiles: 5 each), and the reduced products agree.
    KV, entries = _product(sharded=False)
    assert ranks[0]["product"][1] + ranks[1]["product"][1] == entries
    assert max(ranks[0]["product"][1], ranks[1]["product"][1]) < 0.6 * entries
    for out in ranks:
        _close(out["product"][0], KV, rtol)
    # Every rank runs identical iterations: bitwise the same numbers.
    assert torch.equal(ranks[0]["loss"], ranks[1]["loss"])
    assert all(torch.equal(a, b) for a, b in zip(ranks[0]["grads"], ranks[1]["grads"]))
    # The Cholesky answer, within the iterative path's tolerance (stochastic log-determinant, CG to 1e-3ish).
    chol = _experiment(sharded=False, cholesky=True)
    _close(ranks[0]["loss"], chol["loss"], 2e-2)
    _close(ranks[0]["mean"], chol["mean"], 1e-3)
    for g, g_ref in zip(ranks[0]["grads"], chol["grads"]):
        torch.testing.assert_close(g, g_ref, rtol=0.1, atol=2e-2)


def test_without_process_group_it_is_the_base_kernel():
    base = torchgp.kernels.RBFKernel()
    k = torchgp.distributed.ShardedKernel(base)
    X = torch.randn(5, 2, dtype=torch.float64)
    assert k.tile_shard is None
    torch.testing.assert_close(k(X).to_dense(), base(X).to_dense(), **tol(torch.float64))
    torch.testing.assert_close(k(X, diag=True), base(X, diag=True), **tol(torch.float64))
