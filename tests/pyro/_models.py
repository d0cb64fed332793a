"""The fully Bayesian GP tutorial's exact GP, written once against GPyTorch's API (torchgp or GPyTorch)."""

from __future__ import annotations

import math

import torch


def exact_gp(lib, X, y, ell_prior=(math.log(0.5), 0.5)):
    """Constant mean, scaled RBF and Gaussian noise, each hyperparameter with a prior, built from ``lib``."""

    class FullyBayesianGP(lib.models.ExactGP):
        def __init__(self):
            likelihood = lib.likelihoods.GaussianLikelihood(
                noise_prior=lib.priors.LogNormalPrior(math.log(0.01), 0.5),
                noise_constraint=lib.constraints.Positive(),
            )
            super().__init__(X, y, likelihood)
            self.mean_module = lib.means.ConstantMean(constant_prior=lib.priors.NormalPrior(0.0, 1.0))
            self.covar_module = lib.kernels.ScaleKernel(
                lib.kernels.RBFKernel(lengthscale_prior=lib.priors.LogNormalPrior(*ell_prior)),
                outputscale_prior=lib.priors.LogNormalPrior(0.0, 0.5),
            )

        def forward(self, x):
            return lib.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))

    return FullyBayesianGP().double()


def draw_data(n=25, ell=0.2, noise=1e-2, seed=0):
    """``y = f(X) + ε`` with ``f`` an RBF-kernel GP draw of lengthscale ``ell`` on ``X`` in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    X = torch.linspace(0, 1, n, dtype=torch.float64)
    K = torch.exp(-0.5 * (X[:, None] - X[None]) ** 2 / ell**2) + 1e-8 * torch.eye(n, dtype=torch.float64)
    f = torch.linalg.cholesky(K) @ torch.randn(n, generator=g, dtype=torch.float64)
    return X, f + math.sqrt(noise) * torch.randn(n, generator=g, dtype=torch.float64)
