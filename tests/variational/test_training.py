"""Minibatch training: accuracy on the issue's program, checkpoint/resume, natural gradients."""

from __future__ import annotations

import copy
import io
import math

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import torchgp
from torchgp.variational import NaturalVariationalDistribution, TrilNaturalVariationalDistribution

from ._helpers import HYPERS, SVGP, toy_data


def test_svgp_program_reaches_rmse_01():
    """The issue's program: 2000 points in 2-D, 64 learned inducing points, minibatches of 256, Adam."""
    torch.manual_seed(0)
    train_x = torch.rand(2000, 2)
    fn = lambda x: torch.sin(6 * x[:, 0]) * torch.cos(4 * x[:, 1])  # noqa: E731
    train_y = fn(train_x) + 0.05 * torch.randn(2000)
    model = SVGP(train_x[torch.randperm(2000)[:64]].clone(), ard=2)
    lik = torchgp.likelihoods.GaussianLikelihood()
    mll = torchgp.mlls.VariationalELBO(lik, model, num_data=2000)
    opt = torch.optim.Adam([*model.parameters(), *lik.parameters()], lr=0.02)
    loader = DataLoader(TensorDataset(train_x, train_y), batch_size=256, shuffle=True)
    for _ in range(60):
        for xb, yb in loader:
            opt.zero_grad()
            (-mll(model(xb), yb)).backward()
            opt.step()
    model.eval()
    test_x = torch.rand(1000, 2)
    with torch.no_grad():
        pred = model(test_x).mean
    rmse = (pred - fn(test_x)).pow(2).mean().sqrt().item()
    assert rmse <= 0.1, rmse


def _train(model, lik, loader, opt, mll, epochs):
    for _ in range(epochs):
        for xb, yb in loader:
            opt.zero_grad()
            (-mll(model(xb), yb)).backward()
            opt.step()


def test_checkpoint_resume_equals_uninterrupted_run():
    X, y = toy_data(n=120, d=2)

    def build():
        torch.manual_seed(1)
        model = SVGP(X[:10].clone()).double()
        lik = torchgp.likelihoods.GaussianLikelihood().double()
        opt = torch.optim.Adam([*model.parameters(), *lik.parameters()], lr=0.05)
        mll = torchgp.mlls.VariationalELBO(lik, model, num_data=120)
        gen = torch.Generator().manual_seed(7)
        loader = DataLoader(TensorDataset(X, y), batch_size=32, shuffle=True, generator=gen)
        return model, lik, opt, mll, gen, loader

    model, lik, opt, mll, gen, loader = build()
    _train(model, lik, loader, opt, mll, 6)
    uninterrupted = copy.deepcopy(model.state_dict())

    model, lik, opt, mll, gen, loader = build()
    _train(model, lik, loader, opt, mll, 3)
    buf = io.BytesIO()
    torch.save(
        {"model": model.state_dict(), "lik": lik.state_dict(), "opt": opt.state_dict(), "gen": gen.get_state()}, buf
    )
    buf.seek(0)
    ckpt = torch.load(buf)

    model, lik, opt, mll, gen, loader = build()  # a fresh process would start here
    model.load_state_dict(ckpt["model"])
    lik.load_state_dict(ckpt["lik"])
    opt.load_state_dict(ckpt["opt"])
    gen.set_state(ckpt["gen"])
    _train(model, lik, loader, opt, mll, 3)
    resumed = model.state_dict()
    assert uninterrupted.keys() == resumed.keys()
    for k in uninterrupted:
        torch.testing.assert_close(resumed[k], uninterrupted[k], rtol=0, atol=0)
    # and training moved the parameters (the comparison is not vacuous)
    assert not torch.equal(
        ckpt["model"]["variational_strategy.inducing_points"], resumed["variational_strategy.inducing_points"]
    )


def test_tril_natural_ngd_converges_to_conjugate_optimum():
    X, y = toy_data(n=25)
    finals = {}
    for cls, lr, steps in [(NaturalVariationalDistribution, 1.0, 1), (TrilNaturalVariationalDistribution, 0.5, 40)]:
        model = SVGP(X[::2].clone(), dist_cls=cls, learn_inducing_locations=False).double().initialize(**HYPERS)
        lik = torchgp.likelihoods.GaussianLikelihood().double()
        lik.noise = 0.05
        mll = torchgp.mlls.VariationalELBO(lik, model, num_data=25)
        ngd = torchgp.optim.NGD(model.variational_parameters(), num_data=25, lr=lr)
        for _ in range(steps):
            ngd.zero_grad()
            (-mll(model(X), y)).backward()
            ngd.step()
        with torch.no_grad():
            finals[cls.__name__] = mll(model(X), y).item()
    assert finals["TrilNaturalVariationalDistribution"] == pytest.approx(
        finals["NaturalVariationalDistribution"], abs=1e-6
    )


def test_ngd_with_adam_on_hyperparameters_non_conjugate():
    """The GPyTorch recipe: NGD on q(u), Adam on hyperparameters, Bernoulli likelihood; the ELBO improves."""
    torch.manual_seed(0)
    X = torch.rand(200, 1, dtype=torch.float64) * 4 - 2
    y = (torch.sin(3 * X[:, 0]) > 0).double()
    model = SVGP(
        torch.linspace(-2, 2, 15, dtype=torch.float64).unsqueeze(-1), dist_cls=NaturalVariationalDistribution
    ).double()
    lik = torchgp.likelihoods.BernoulliLikelihood()
    mll = torchgp.mlls.VariationalELBO(lik, model, num_data=200)
    ngd = torchgp.optim.NGD(model.variational_parameters(), num_data=200, lr=0.1)
    adam = torch.optim.Adam(model.hyperparameters(), lr=0.05)
    names = {n for n, _ in model.named_variational_parameters()}
    assert names == {
        "variational_strategy._variational_distribution.natural_vec",
        "variational_strategy._variational_distribution.natural_mat",
    }
    losses = []
    for _ in range(60):
        ngd.zero_grad()
        adam.zero_grad()
        loss = -mll(model(X), y)
        loss.backward()
        ngd.step()
        adam.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.2 and math.isfinite(losses[-1])
    model.eval()
    with torch.no_grad():
        acc = ((lik(model(X)).probs > 0.5).double() == y).double().mean().item()
    assert acc > 0.9


def test_unwhitened_classification_tutorial_trains_in_float32():
    """GPyTorch's GP-classification tutorial: 10 points, unwhitened strategy, Adam lr 0.1, 50 steps (float32).

    With a near-singular K_zz the unwhitened KL explodes after Adam's first step unless K_zz carries
    enough jitter; the model must still learn the square wave.
    """
    torch.manual_seed(0)
    train_x = torch.linspace(0, 1, 10)
    train_y = torch.sign(torch.cos(train_x * (4 * math.pi))).add(1).div(2)

    class Model(torchgp.models.ApproximateGP):
        def __init__(self):
            q = torchgp.variational.CholeskyVariationalDistribution(10)
            super().__init__(
                torchgp.variational.UnwhitenedVariationalStrategy(self, train_x, q, learn_inducing_locations=False)
            )
            self.mean_module = torchgp.means.ConstantMean()
            self.covar_module = torchgp.kernels.ScaleKernel(torchgp.kernels.RBFKernel())

        def forward(self, x):
            return torchgp.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))

    model, likelihood = Model(), torchgp.likelihoods.BernoulliLikelihood()
    elbo = torchgp.mlls.VariationalELBO(likelihood, model, num_data=10)
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    for _ in range(50):
        opt.zero_grad()
        loss = -elbo(model(train_x), train_y)
        loss.backward()
        opt.step()
    assert loss.item() < 1.2
    model.eval()
    with torch.no_grad():
        test_x = torch.linspace(0, 1, 101)
        labels = likelihood(model(test_x)).mean.ge(0.5).float()
    truth = torch.sign(torch.cos(test_x * (4 * math.pi))).add(1).div(2)
    assert (labels == truth).float().mean() > 0.8
