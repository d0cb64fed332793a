"""Shared models and tolerances for the variational tests."""

from __future__ import annotations

import torch

import torchgp
from tests._tol import tol  # noqa: F401  (the shared dtype-keyed tolerances)
from torchgp.variational import CholeskyVariationalDistribution, VariationalStrategy


class SVGP(torchgp.models.ApproximateGP):
    """Constant mean, scaled RBF; any distribution / strategy class."""

    def __init__(
        self,
        Z,
        dist_cls=CholeskyVariationalDistribution,
        strategy_cls=VariationalStrategy,
        batch_shape=torch.Size([]),
        learn_inducing_locations=True,
        ard=None,
    ):
        q = dist_cls(Z.shape[-2], batch_shape=batch_shape)
        super().__init__(strategy_cls(self, Z, q, learn_inducing_locations=learn_inducing_locations))
        self.mean_module = torchgp.means.ConstantMean(batch_shape=batch_shape)
        self.covar_module = torchgp.kernels.ScaleKernel(
            torchgp.kernels.RBFKernel(ard_num_dims=ard, batch_shape=batch_shape), batch_shape=batch_shape
        )

    def forward(self, x):
        return torchgp.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))


class ExactModel(torchgp.models.ExactGP):
    def __init__(self, X, y, lik):
        super().__init__(X, y, lik)
        self.mean_module = torchgp.means.ConstantMean()
        self.covar_module = torchgp.kernels.ScaleKernel(torchgp.kernels.RBFKernel())

    def forward(self, x):
        return torchgp.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))


class SGPRModel(torchgp.models.SGPR):
    def __init__(self, X, y, lik, Z):
        super().__init__(X, y, lik, Z)
        self.mean_module = torchgp.means.ConstantMean()
        self.covar_module = torchgp.kernels.ScaleKernel(torchgp.kernels.RBFKernel())

    def forward(self, x):
        return torchgp.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))


HYPERS = {
    "mean_module.constant": 0.3,
    "covar_module.outputscale": 1.5,
    "covar_module.base_kernel.lengthscale": 0.4,
}


def toy_data(n=30, d=1, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.rand(n, d, generator=g, dtype=dtype) * 2 - 1
    y = torch.sin(3 * X).sum(-1) + 0.1 * torch.randn(n, generator=g, dtype=dtype)
    return X, y
