"""The two founding programs, run unchanged after ``import torchgp as gpytorch``."""

from __future__ import annotations

import math

import torch

import torchgp as gpytorch


def test_program_1_simple_regression():
    torch.manual_seed(0)
    train_x = torch.randn(100, 1)
    train_y = torch.sin(train_x) + 0.2 * torch.randn(100, 1)

    class ExactGPModel(gpytorch.models.ExactGP):
        def __init__(self, train_x, train_y, likelihood):
            super().__init__(train_x, train_y, likelihood)
            self.mean_module = gpytorch.means.ConstantMean()
            self.covar_module = gpytorch.kernels.ScaleKernel(gpytorch.kernels.RBFKernel())

        def forward(self, x):
            mean_x = self.mean_module(x)
            covar_x = self.covar_module(x)
            return gpytorch.distributions.MultivariateNormal(mean_x, covar_x)

    likelihood = gpytorch.likelihoods.GaussianLikelihood()
    model = ExactGPModel(train_x, train_y, likelihood)
    model.train()
    likelihood.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    for _ in range(100):
        optimizer.zero_grad()
        output = model(train_x)
        loss = -model.log_likelihood(output, train_y)
        loss.backward()
        optimizer.step()

    model.eval()
    likelihood.eval()
    with torch.no_grad():
        test_x = torch.linspace(-5, 5, 50)
        observed_pred = likelihood(model(test_x))

    inside = test_x.abs() <= 2
    rmse = (observed_pred.mean[inside] - torch.sin(test_x[inside])).pow(2).mean().sqrt()
    assert observed_pred.mean.shape == (50,)
    assert rmse < 0.15
    assert 0.1 <= likelihood.noise.sqrt().item() <= 0.35
    lower, upper = observed_pred.confidence_region()
    assert torch.all(lower < observed_pred.mean) and torch.all(observed_pred.mean < upper)


def test_program_2_custom_kernel():
    torch.manual_seed(0)
    train_x = torch.linspace(0, 1, 40)
    train_y = torch.sin(train_x * (2 * math.pi)) + 0.1 * torch.randn(40)

    class MyCustomKernel(gpytorch.kernels.Kernel):
        def __init__(self, param1, param2):
            super().__init__()
            self.param1 = torch.nn.Parameter(torch.tensor(param1))
            self.param2 = torch.nn.Parameter(torch.tensor(param2))

        def forward(self, x1, x2):
            return torch.exp(-(torch.cdist(x1, x2) ** 2) / (2 * self.param1)) * self.param2

    class ExactGPModel(gpytorch.models.ExactGP):
        def __init__(self, train_x, train_y, likelihood):
            super().__init__(train_x, train_y, likelihood)
            self.mean_module = gpytorch.means.ConstantMean()
            self.covar_module = MyCustomKernel(1.0, 1.0)

        def forward(self, x):
            return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))

    likelihood = gpytorch.likelihoods.GaussianLikelihood()
    model = ExactGPModel(train_x, train_y, likelihood)
    mll = gpytorch.mlls.ExactMarginalLogLikelihood(likelihood, model)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    start = (model.covar_module.param1.item(), model.covar_module.param2.item())
    model.train()
    likelihood.train()
    losses = []
    for _ in range(50):
        optimizer.zero_grad()
        loss = -mll(model(train_x), train_y)
        loss.backward()
        for p in (model.covar_module.param1, model.covar_module.param2):
            assert p.grad is not None and torch.isfinite(p.grad)
        optimizer.step()
        losses.append(loss.item())
    assert model.covar_module.param1.item() != start[0]
    assert model.covar_module.param2.item() != start[1]
    assert losses[-1] < losses[0]

    model.eval()
    likelihood.eval()
    with torch.no_grad():
        test_x = torch.linspace(0, 1, 51)
        observed_pred = likelihood(model(test_x))
        variance = observed_pred.variance
        lower, upper = observed_pred.confidence_region()
    assert variance.shape == (51,) and torch.all(variance > 0)
    assert torch.all(lower < upper)
    rmse = (observed_pred.mean - torch.sin(test_x * 2 * math.pi)).pow(2).mean().sqrt()
    assert rmse < 0.3
