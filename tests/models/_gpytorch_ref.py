"""The same exact GP in GPyTorch 1.15.2 (the reference oracle) as ``tests/models/_models.make_model``."""

from __future__ import annotations

import torch


def gpytorch_model(X, y, noise=0.05, lengthscale=0.7, outputscale=1.3, constant=0.2, fixed_noise=None):
    """A GPyTorch ``ConstantMean + ScaleKernel(RBF)`` exact GP in eval mode, float64."""
    import gpytorch

    class Model(gpytorch.models.ExactGP):
        def __init__(self, X, y, lik):
            super().__init__(X, y, lik)
            self.mean_module = gpytorch.means.ConstantMean()
            self.covar_module = gpytorch.kernels.ScaleKernel(gpytorch.kernels.RBFKernel())

        def forward(self, x):
            return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))

    if fixed_noise is None:
        lik = gpytorch.likelihoods.GaussianLikelihood()
    else:
        lik = gpytorch.likelihoods.FixedNoiseGaussianLikelihood(noise=fixed_noise)
    model = Model(X, y, lik).double()
    hypers = {
        "covar_module.base_kernel.lengthscale": lengthscale,
        "covar_module.outputscale": outputscale,
        "mean_module.constant": constant,
    }
    if fixed_noise is None:
        hypers["likelihood.noise"] = noise
    # tensors, not floats: GPyTorch's setters turn a float into a float32 tensor first
    model.initialize(**{k: torch.tensor(v, dtype=torch.float64) for k, v in hypers.items()})
    return model.eval()
