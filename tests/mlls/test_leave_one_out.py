"""LeaveOneOutPseudoLikelihood: R&W (2006) eq. 5.10-5.12 against n explicit refits, and GPyTorch's number."""

from __future__ import annotations

import math

import gpytorch
import torch

import torchgp
from tests._tol import assert_close
from tests.models._models import ExactModel, data, make_model

D64 = torch.float64


def _brute_force_loo(model, X, y):
    """Σ_i log p(y_i | X, y_{-i}): for each i a model on the other n - 1 points predicts y_i."""
    total = 0.0
    hypers = {name: p.detach().clone() for name, p in model.named_parameters()}
    for i in range(len(X)):
        keep = [j for j in range(len(X)) if j != i]
        sub = ExactModel(X[keep], y[keep], torchgp.likelihoods.GaussianLikelihood()).double()
        sub.initialize(**hypers)
        sub.eval()
        pred = sub.likelihood(sub(X[i : i + 1]))
        total = total + torch.distributions.Normal(pred.mean, pred.variance.sqrt()).log_prob(y[i : i + 1]).sum()
    return total


def test_loo_equals_n_refits_and_gpytorch():
    model, X, y = make_model(n=9)
    loo = torchgp.mlls.LeaveOneOutPseudoLikelihood(model.likelihood, model)
    value = loo(model(X), y)
    assert_close(value, _brute_force_loo(model, X, y) / 9)

    class G(gpytorch.models.ExactGP):
        def __init__(self):
            super().__init__(X, y, gpytorch.likelihoods.GaussianLikelihood())
            self.mean_module = gpytorch.means.ConstantMean()
            self.covar_module = gpytorch.kernels.ScaleKernel(gpytorch.kernels.RBFKernel())

        def forward(self, x):
            return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))

    g = G().double()
    g.initialize(**{name: p.detach().clone() for name, p in model.named_parameters()})
    assert_close(value, gpytorch.mlls.LeaveOneOutPseudoLikelihood(g.likelihood, g)(g(X), y))


def test_loo_gradient_equals_finite_differences_and_batches():
    model, X, y = make_model(n=7)
    loo = torchgp.mlls.LeaveOneOutPseudoLikelihood(model.likelihood, model)
    raw = model.covar_module.base_kernel.raw_lengthscale
    (grad,) = torch.autograd.grad(loo(model(X), y), raw)
    eps = 1e-6
    with torch.no_grad():
        raw += eps
        up = loo(model(X), y)
        raw -= 2 * eps
        down = loo(model(X), y)
        raw += eps
    torch.testing.assert_close(grad.sum(), (up - down) / (2 * eps), rtol=1e-6, atol=1e-7)

    Xb, yb = data(n=6, batch=(2,))
    batch = torch.Size([2])
    bm = ExactModel(Xb, yb, torchgp.likelihoods.GaussianLikelihood(batch_shape=batch), batch_shape=batch).double()
    values = torchgp.mlls.LeaveOneOutPseudoLikelihood(bm.likelihood, bm)(bm(Xb), yb)
    assert values.shape == (2,)
    for b in range(2):
        single = ExactModel(Xb[b], yb[b], torchgp.likelihoods.GaussianLikelihood()).double()
        ref = torchgp.mlls.LeaveOneOutPseudoLikelihood(single.likelihood, single)(single(Xb[b]), yb[b])
        assert_close(values[b], ref)
    assert math.isfinite(values.sum().item())
