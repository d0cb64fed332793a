"""Shared fixtures of the BO tests: a small fixed-hyperparameter GP, a stub model and tolerances."""

import pytest
import torch

import torchgp
from tests._threads import one_thread
from tests._tol import tol as _shared_tol
from torchgp.distributions import MultivariateNormal


@pytest.fixture(autouse=True)
def _single_thread():
    """BO works on tiny matrices, where thread start-up and oversubscription cost far more than they save."""
    with one_thread():
        yield


class ExactModel(torchgp.models.ExactGP):
    def __init__(self, X, y):
        super().__init__(X, y, torchgp.likelihoods.GaussianLikelihood())
        self.mean_module = torchgp.means.ConstantMean()
        self.covar_module = torchgp.kernels.ScaleKernel(torchgp.kernels.RBFKernel(ard_num_dims=X.shape[-1]))

    def forward(self, x):
        return MultivariateNormal(self.mean_module(x), self.covar_module(x))


def make_gp(X, y, lengthscale=0.3, outputscale=1.0, noise=1e-4):
    """An ExactGP with fixed hyperparameters, float64, in eval mode."""
    model = ExactModel(X, y).double()
    model.covar_module.base_kernel.lengthscale = lengthscale
    model.covar_module.outputscale = outputscale
    model.likelihood.noise = noise
    model.eval()
    return model


@pytest.fixture
def gp():
    """GP on 12 points of a smooth function in [0, 1]^2."""
    g = torch.Generator().manual_seed(0)
    X = torch.rand(12, 2, generator=g, dtype=torch.float64)
    y = torch.sin(6 * X[:, 0]) * torch.cos(4 * X[:, 1])
    return make_gp(X, y)


class StubModel(torch.nn.Module):
    """``model(X (t, d))`` → independent ``N(slope · x₀, sigma²)``: full control over z = (μ - f*)/σ."""

    def __init__(self, slope=1.0, sigma=1.0):
        super().__init__()
        self.slope, self.sigma = slope, sigma

    def forward(self, X):
        mean = self.slope * X[..., 0]
        var = torch.full_like(mean, self.sigma**2)
        return MultivariateNormal(mean, torch.diag_embed(var))


@pytest.fixture
def stub():
    return StubModel().double().eval()


@pytest.fixture
def gp_factory():
    """``gp_factory(X, y, lengthscale=..., outputscale=..., noise=...)`` → fixed-hyperparameter GP in eval mode."""
    return make_gp


@pytest.fixture
def tol():
    """``tol(dtype)`` → ``{"rtol", "atol"}`` for values computed two ways that should agree to rounding.

    The shared dtype-keyed tolerances of ``tests/_tol.py``, tightened 100x: the closed forms here
    involve no iteration or jitter, only a few flops of rounding.
    """
    return lambda dtype: _shared_tol(dtype, loose=0.01)
