"""IndependentModelList, LikelihoodList, SumMarginalLogLikelihood: each model on its own, and GPyTorch's numbers."""

from __future__ import annotations

import math

import gpytorch
import pytest
import torch

import torchgp
from tests._tol import assert_close
from tests.models._models import ExactModel, data

_H = [
    {"likelihood.noise": 0.05, "covar_module.base_kernel.lengthscale": 0.7, "covar_module.outputscale": 1.3},
    {"likelihood.noise": 0.2, "covar_module.base_kernel.lengthscale": 0.4, "covar_module.outputscale": 0.8},
]


def _ours(X, y, hypers):
    return ExactModel(X, y, torchgp.likelihoods.GaussianLikelihood()).double().initialize(**hypers)


def _gpytorch(X, y, hypers):
    class G(gpytorch.models.ExactGP):
        def __init__(self):
            super().__init__(X, y, gpytorch.likelihoods.GaussianLikelihood())
            self.mean_module = gpytorch.means.ConstantMean()
            self.covar_module = gpytorch.kernels.ScaleKernel(gpytorch.kernels.RBFKernel())

        def forward(self, x):
            return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))

    return G().double().initialize(**{k: torch.tensor(v, dtype=torch.float64) for k, v in hypers.items()})


def _two(seed_a=0, seed_b=1):
    (Xa, ya), (Xb, yb) = data(n=8, seed=seed_a), data(n=11, seed=seed_b)
    return (Xa, ya), (Xb, yb)


def test_sum_mll_equals_mean_of_individual_mlls_and_gpytorch():
    (Xa, ya), (Xb, yb) = _two()
    ma, mb = _ours(Xa, ya, _H[0]), _ours(Xb, yb, _H[1])
    model = torchgp.models.IndependentModelList(ma, mb)
    assert model.num_outputs == 2 and isinstance(model.likelihood, torchgp.likelihoods.LikelihoodList)
    mll = torchgp.mlls.SumMarginalLogLikelihood(model.likelihood, model)
    value = mll(model(*model.train_inputs), model.train_targets)
    each = [
        torchgp.mlls.ExactMarginalLogLikelihood(m.likelihood, m)(m(X), y) for m, X, y in ((ma, Xa, ya), (mb, Xb, yb))
    ]
    assert_close(value, (each[0] + each[1]) / 2)  # GPyTorch's SumMarginalLogLikelihood averages over the models

    ga, gb = _gpytorch(Xa, ya, _H[0]), _gpytorch(Xb, yb, _H[1])
    gmodel = gpytorch.models.IndependentModelList(ga, gb)
    gmll = gpytorch.mlls.SumMarginalLogLikelihood(gmodel.likelihood, gmodel)
    assert_close(value, gmll(gmodel(*gmodel.train_inputs), gmodel.train_targets))

    ls = ma.covar_module.base_kernel.raw_lengthscale
    (grad_list,) = torch.autograd.grad(value, ls)
    (grad_alone,) = torch.autograd.grad(each[0] / 2, ls)
    assert_close(grad_list, grad_alone)  # each model's hyperparameters see only their own objective


def test_predictions_equal_the_individual_models_and_gpytorch():
    (Xa, ya), (Xb, yb) = _two()
    ma, mb = _ours(Xa, ya, _H[0]), _ours(Xb, yb, _H[1])
    model = torchgp.models.IndependentModelList(ma, mb).eval()
    xa, xb = torch.linspace(-2, 2, 5, dtype=torch.float64), torch.linspace(-1, 3, 4, dtype=torch.float64)
    preds = model.likelihood(*model(xa, xb))
    for pred, m, x in zip(preds, (ma, mb), (xa, xb)):
        ref = m.likelihood(m(x))
        assert_close(pred.mean, ref.mean)
        assert_close(pred.covariance_matrix, ref.covariance_matrix)
    gmodel = gpytorch.models.IndependentModelList(_gpytorch(Xa, ya, _H[0]), _gpytorch(Xb, yb, _H[1])).eval()
    with torch.no_grad():
        gpreds = gmodel.likelihood(*gmodel(xa.unsqueeze(-1), xb.unsqueeze(-1)))
    for pred, gpred in zip(preds, gpreds):
        assert_close(pred.mean, gpred.mean)
        assert_close(pred.covariance_matrix, gpred.covariance_matrix)
    assert_close(model.forward_i(1, xb.unsqueeze(-1)).mean, mb.forward(xb.unsqueeze(-1)).mean)
    assert_close(model.likelihood_i(0, model(xa, xb)[0]).mean, preds[0].mean)


def test_fantasy_model_per_model():
    (Xa, ya), (Xb, yb) = _two()
    model = torchgp.models.IndependentModelList(_ours(Xa, ya, _H[0]), _ours(Xb, yb, _H[1])).eval()
    new_x = [torch.tensor([[0.3]], dtype=torch.float64), torch.tensor([[0.1], [0.2]], dtype=torch.float64)]
    new_y = [torch.tensor([0.5], dtype=torch.float64), torch.tensor([-0.2, 0.1], dtype=torch.float64)]
    fant = model.get_fantasy_model(new_x, new_y)
    assert isinstance(fant, torchgp.models.IndependentModelList)
    x = torch.linspace(-1, 1, 3, dtype=torch.float64)
    for i, (X, y) in enumerate(((Xa, ya), (Xb, yb))):
        ref = _ours(torch.cat([X, new_x[i]]), torch.cat([y, new_y[i]]), _H[i]).eval()
        assert_close(fant.models[i](x).mean, ref(x).mean)
    assert [len(t) for t in fant.train_targets] == [9, 13]


def test_wrong_number_of_inputs_is_refused():
    (Xa, ya), (Xb, yb) = _two()
    model = torchgp.models.IndependentModelList(_ours(Xa, ya, _H[0]), _ours(Xb, yb, _H[1]))
    with pytest.raises(torchgp.errors.InputError, match="2 models but got 1"):
        model(Xa)
    with pytest.raises(torchgp.errors.InputError, match="2 likelihoods"):
        model.likelihood(model(Xa, Xb)[0])
    with pytest.raises(torchgp.errors.ModelTypeError, match="no likelihood"):
        torchgp.models.IndependentModelList(torchgp.kernels.RBFKernel())


def test_gpytorch_modellist_tutorial_runs():
    """GPyTorch's "ModelList (Multi-Output) GP Regression" tutorial, small n, ``import torchgp as gpytorch``."""
    import torchgp as gpytorch  # noqa: F811  (the tutorial's code, unchanged but for sizes)

    train_x1 = torch.linspace(0, 0.95, 12) + 0.05 * torch.rand(12)
    train_x2 = torch.linspace(0, 0.95, 8) + 0.05 * torch.pow(torch.rand(8), 2)
    train_y1 = torch.sin(train_x1 * (2 * math.pi)) + 0.2 * torch.randn_like(train_x1)
    train_y2 = torch.cos(train_x2 * (2 * math.pi)) + 0.2 * torch.randn_like(train_x2)

    class ExactGPModel(gpytorch.models.ExactGP):
        def __init__(self, train_x, train_y, likelihood):
            super().__init__(train_x, train_y, likelihood)
            self.mean_module = gpytorch.means.ConstantMean()
            self.covar_module = gpytorch.kernels.ScaleKernel(gpytorch.kernels.RBFKernel())

        def forward(self, x):
            mean_x = self.mean_module(x)
            covar_x = self.covar_module(x)
            return gpytorch.distributions.MultivariateNormal(mean_x, covar_x)

    likelihood1 = gpytorch.likelihoods.GaussianLikelihood()
    model1 = ExactGPModel(train_x1, train_y1, likelihood1)
    likelihood2 = gpytorch.likelihoods.GaussianLikelihood()
    model2 = ExactGPModel(train_x2, train_y2, likelihood2)
    model = gpytorch.models.IndependentModelList(model1, model2)
    likelihood = gpytorch.likelihoods.LikelihoodList(model1.likelihood, model2.likelihood)

    from torchgp.mlls import SumMarginalLogLikelihood

    mll = SumMarginalLogLikelihood(likelihood, model)
    model.train()
    likelihood.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    losses = []
    for _ in range(15):
        optimizer.zero_grad()
        output = model(*model.train_inputs)
        loss = -mll(output, model.train_targets)
        loss.backward()
        losses.append(loss.item())
        optimizer.step()
    assert losses[-1] < losses[0]

    model.eval()
    likelihood.eval()
    with torch.no_grad(), gpytorch.settings.fast_pred_var():
        test_x = torch.linspace(0, 1, 11)
        predictions = likelihood(*model(test_x, test_x))
    for submodel, prediction in zip(model.models, predictions):
        mean = prediction.mean
        lower, upper = prediction.confidence_region()
        assert submodel.train_inputs[0].detach().numpy().shape[0] in (12, 8)
        assert mean.shape == (11,) and torch.all(lower < upper)
