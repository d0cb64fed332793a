"""The exact GP the structured-kernel tests wrap around a covariance: constant mean, Gaussian likelihood."""

import torchgp as gpytorch


class GP(gpytorch.models.ExactGP):
    """``GP(x (n, d), y (n,), covar)``: ``MultivariateNormal(constant, covar(x))`` with a ``GaussianLikelihood``."""

    def __init__(self, x, y, covar):
        super().__init__(x, y, gpytorch.likelihoods.GaussianLikelihood())
        self.mean_module = gpytorch.means.ConstantMean()
        self.covar_module = covar

    def forward(self, x):
        return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))
