"""DDP SVGP on 2 gloo ranks, each on half of every minibatch, equals one process on the whole minibatches."""

from __future__ import annotations

import pytest
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, TensorDataset

import torchgp
from tests._tol import tol
from tests.distributed import _spawn
from torchgp.variational import CholeskyVariationalDistribution, NaturalVariationalDistribution, VariationalStrategy

N, M, BATCH, STEPS = 64, 8, 16, 20


class _SVGP(torchgp.models.ApproximateGP):
    def __init__(self, Z, dist_cls):
        super().__init__(VariationalStrategy(self, Z, dist_cls(Z.shape[-2]), learn_inducing_locations=True))
        self.mean_module = torchgp.means.ConstantMean()
        self.covar_module = torchgp.kernels.ScaleKernel(torchgp.kernels.RBFKernel())

    def forward(self, x):
        return torchgp.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))


def _data():
    g = torch.Generator().manual_seed(1)
    X = torch.rand(N, 1, generator=g, dtype=torch.float64) * 4 - 2
    y = torch.sin(2 * X[:, 0]) + 0.1 * torch.randn(N, generator=g, dtype=torch.float64)
    return X, y


def _elbo(natural: bool):
    torch.manual_seed(0)
    X, y = _data()
    Z = torch.linspace(-2, 2, M, dtype=torch.float64).unsqueeze(-1)
    model = _SVGP(Z, NaturalVariationalDistribution if natural else CholeskyVariationalDistribution).double()
    lik = torchgp.likelihoods.GaussianLikelihood().double()
    return torchgp.mlls.VariationalELBO(lik, model, num_data=N), X, y


def _optimizers(elbo, natural: bool):
    if not natural:
        return [torch.optim.Adam(elbo.parameters(), lr=0.05)]
    hyper = list(elbo.model.hyperparameters()) + list(elbo.likelihood.parameters())
    return [
        torchgp.optim.NGD(elbo.model.variational_parameters(), num_data=N, lr=0.1),
        torch.optim.Adam(hyper, lr=0.05),
    ]


def _trajectory(natural: bool, rank: int = 0, world_size: int = 1) -> list[torch.Tensor]:
    """Parameters after each of STEPS steps; rank r of p takes points r, r+p, ... of each global minibatch."""
    elbo, X, y = _elbo(natural)
    loss_fn = torchgp.distributed.DataParallelLoss(elbo)
    if world_size > 1:
        loss_fn = DistributedDataParallel(loss_fn)
    optimizers = _optimizers(elbo, natural)
    g = torch.Generator().manual_seed(5)
    out = []
    for step in range(STEPS):
        if step % (N // BATCH) == 0:
            perm = torch.randperm(N, generator=g)
        idx = perm[(step % (N // BATCH)) * BATCH : (step % (N // BATCH) + 1) * BATCH][rank::world_size]
        for o in optimizers:
            o.zero_grad()
        loss_fn(X[idx], y[idx]).backward()
        for o in optimizers:
            o.step()
        out.append(torch.cat([p.detach().reshape(-1).clone() for p in elbo.parameters()]))
    return out


def _helper_fit(natural: bool) -> torch.Tensor:
    elbo, X, y = _elbo(natural)
    loader = DataLoader(TensorDataset(X, y), batch_size=BATCH, shuffle=True)
    result = torchgp.distributed.fit(elbo, loader, _optimizers(elbo, natural), maxiter=2, seed=7)
    assert len(result.history) == 2
    return torch.cat([p.detach().reshape(-1) for p in elbo.parameters()])


def _worker(rank, world_size):
    return {
        "adam": _trajectory(False, rank, world_size),
        "ngd": _trajectory(True, rank, world_size),
        "fit": _helper_fit(False),
        "fit_ngd": _helper_fit(True),
        "dispatch": _dispatched_fit(),
    }


def _dispatched_fit() -> torch.Tensor:
    """``torchgp.fit(elbo, data=loader)`` with a process group: the data-parallel helper."""
    elbo, X, y = _elbo(False)
    loader = DataLoader(TensorDataset(X, y), batch_size=BATCH, shuffle=True)
    result = torchgp.fit(elbo, optimizer=_optimizers(elbo, False), data=loader, maxiter=2, seed=7)
    assert "data-parallel over 2 rank(s)" in result.message
    return torch.cat([p.detach().reshape(-1) for p in elbo.parameters()])


def test_ddp_svgp_trajectories_equal_single_process(tmp_path):
    ranks = _spawn.run(_worker, tmp_path)
    rtol = tol(torch.float64, loose=100)["rtol"]  # 1e-6
    single = {"adam": _trajectory(False), "ngd": _trajectory(True), "fit": _helper_fit(False)}
    single["fit_ngd"], single["dispatch"] = _helper_fit(True), single["fit"]
    for out in ranks:
        for key in ("adam", "ngd"):
            assert len(out[key]) == STEPS
            for p, p_ref in zip(out[key], single[key]):
                torch.testing.assert_close(p, p_ref, rtol=rtol, atol=rtol * 1e-2)
        # The helper, on 2 ranks, visits the same global minibatches as on one process.
        torch.testing.assert_close(out["fit"], single["fit"], rtol=rtol, atol=rtol * 1e-2)
        torch.testing.assert_close(out["fit_ngd"], single["fit_ngd"], rtol=rtol, atol=rtol * 1e-2)
        torch.testing.assert_close(out["dispatch"], single["dispatch"], rtol=rtol, atol=rtol * 1e-2)
    # Training moved the parameters (the comparison is not between two unmoved models).
    assert (single["adam"][-1] - single["adam"][0]).abs().max() > 1e-2


def test_fit_rejects_exact_mll_and_bad_loader():
    elbo, X, y = _elbo(False)
    with pytest.raises(torchgp.errors.InputError, match="DataLoader"):
        torchgp.distributed.fit(elbo, (X, y))
    exact = torchgp.mlls.ExactMarginalLogLikelihood(elbo.likelihood, elbo.model)
    with pytest.raises(torchgp.errors.InputError, match="ShardedKernel"):
        torchgp.distributed.fit(exact, DataLoader(TensorDataset(X, y), batch_size=8))
