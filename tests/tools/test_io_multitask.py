"""Multitask models through the tools layer: ``torchgp.fit`` and ``save`` / ``load`` round trips."""

from __future__ import annotations

import pytest
import torch

import torchgp
from tests._tol import assert_close
from tests.multitask._models import D, batch_independent_model, icm_model, toy_data
from torchgp.errors import ShapeError
from torchgp.models.builders import HadamardGPModel, IndependentMultitaskGPModel, MultitaskExactGPModel


def _perturb(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model


def _hadamard_data(t=3, n=9):
    X, Y = toy_data(n=n, t=t)
    i = torch.arange(n) % t
    return X, i, Y[torch.arange(n), i]


def _builders():
    X, Y = toy_data(n=8, t=3)
    Xh, ih, yh = _hadamard_data()
    return {
        "icm_rank0": lambda: MultitaskExactGPModel(X, Y, rank=1),
        "icm_lik_rank2": lambda: MultitaskExactGPModel(X, Y, rank=2, likelihood_rank=2),
        "lcm": lambda: MultitaskExactGPModel(X, Y, kernel=["rbf", "matern52"], rank=1),
        "independent": lambda: IndependentMultitaskGPModel(X, Y),
        "hadamard": lambda: HadamardGPModel(Xh, ih, yh, num_tasks=3, rank=2),
    }


def _test_inputs(name):
    Xs = torch.linspace(-0.1, 1.1, 5, dtype=D).unsqueeze(-1)
    return (Xs, torch.tensor([0, 1, 2, 1, 0]).unsqueeze(-1)) if name == "hadamard" else (Xs,)


def _predict(model, inputs):
    model.eval()
    with torch.no_grad():
        f = model(*inputs)
        y = model.likelihood(f, *inputs) if isinstance(model, HadamardGPModel) else model.likelihood(f)
        return f.mean, f.covariance_matrix, y.variance


@pytest.mark.parametrize("name", list(_builders()))
def test_builder_models_round_trip_with_equal_predictions(name, tmp_path):
    model = _perturb(_builders()[name]().double())
    inputs = _test_inputs(name)
    expected = _predict(model, inputs)
    path = tmp_path / "m.safetensors"
    torchgp.save(model, path)
    loaded = torchgp.load(path)
    assert type(loaded) is type(model)
    for a, b in zip(_predict(loaded, inputs), expected):
        assert_close(a, b, loose=1e-4)  # 1e-12


@pytest.mark.parametrize("lik_rank", [0, 2])
@pytest.mark.parametrize("interleaved", [True, False])
def test_tutorial_models_load_into_an_instance(lik_rank, interleaved, tmp_path):
    X, Y = toy_data(n=8, t=3)
    model = _perturb(icm_model(torchgp, X, Y, rank=2, lik_rank=lik_rank, interleaved=interleaved))
    expected = _predict(model, _test_inputs("icm"))
    torchgp.save(model, tmp_path / "m.safetensors")
    fresh = icm_model(torchgp, X, Y, rank=2, lik_rank=lik_rank, interleaved=interleaved)
    loaded = torchgp.load(tmp_path / "m.safetensors", model=fresh)
    for a, b in zip(_predict(loaded, _test_inputs("icm")), expected):
        assert_close(a, b, loose=1e-4)
    independent = _perturb(batch_independent_model(torchgp, X, Y))
    expected = _predict(independent, _test_inputs("icm"))
    torchgp.save(independent, tmp_path / "b.safetensors")
    loaded = torchgp.load(tmp_path / "b.safetensors", model=batch_independent_model(torchgp, X, Y))
    for a, b in zip(_predict(loaded, _test_inputs("icm")), expected):
        assert_close(a, b, loose=1e-4)


@pytest.mark.parametrize("name", ["icm_rank0", "independent", "hadamard"])
def test_fit_raises_the_mll_of_multitask_exact_models(name):
    model = _builders()[name]().double()
    mll = torchgp.mlls.ExactMarginalLogLikelihood(model.likelihood, model)
    model.train()
    before = float(mll(model(*model.train_inputs), model.train_targets))
    result = torchgp.fit(mll, maxiter=15)
    model.train()
    after = float(mll(model(*model.train_inputs), model.train_targets))
    assert after > before + 1e-3
    assert result.iterations > 0


def test_fit_trains_a_multitask_variational_model():
    X, Y = toy_data(n=16, t=2)

    class LMC(torchgp.models.ApproximateGP):
        def __init__(self):
            q = torchgp.variational.CholeskyVariationalDistribution(6, batch_shape=torch.Size([2]))
            base = torchgp.variational.VariationalStrategy(self, X[:6].expand(2, 6, 1).clone(), q)
            super().__init__(torchgp.variational.LMCVariationalStrategy(base, num_tasks=2, num_latents=2))
            self.mean_module = torchgp.means.ConstantMean(batch_shape=torch.Size([2]))
            self.covar_module = torchgp.kernels.RBFKernel(batch_shape=torch.Size([2]))

        def forward(self, x):
            return torchgp.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))

    torch.manual_seed(0)
    model = LMC().double()
    likelihood = torchgp.likelihoods.MultitaskGaussianLikelihood(num_tasks=2).double()
    mll = torchgp.mlls.VariationalELBO(likelihood, model, num_data=16)
    model.train()
    before = float(mll(model(X), Y))
    torchgp.fit(mll, "adam", data=[(X, Y)], maxiter=60, lr=0.05)
    after = float(mll(model(X), Y))
    assert after > before


def test_builders_reject_targets_that_do_not_fit_the_likelihood():
    X, Y = toy_data(n=6, t=3)
    with pytest.raises(ShapeError, match="num_tasks = 2"):
        MultitaskExactGPModel(X, Y, likelihood=torchgp.likelihoods.MultitaskGaussianLikelihood(num_tasks=2))
    with pytest.raises(ShapeError, match=r"\(\*batch, n, t\)"):
        MultitaskExactGPModel(X, Y[:, 0])
    with pytest.raises(ShapeError, match="num_tasks = 4"):
        IndependentMultitaskGPModel(X, Y, likelihood=torchgp.likelihoods.MultitaskGaussianLikelihood(num_tasks=4))
