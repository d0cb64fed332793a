"""Small models shared by the model, likelihood and MLL tests."""

from __future__ import annotations

import torch

import torchgp


class ExactModel(torchgp.models.ExactGP):
    """ConstantMean + ScaleKernel(RBF) (or the kernel given), as in GPyTorch's tutorials."""

    def __init__(self, X, y, likelihood, kernel=None, mean=None, batch_shape=torch.Size()):
        super().__init__(X, y, likelihood)
        self.mean_module = torchgp.means.ConstantMean(batch_shape=batch_shape) if mean is None else mean
        self.covar_module = (
            torchgp.kernels.ScaleKernel(torchgp.kernels.RBFKernel(batch_shape=batch_shape), batch_shape=batch_shape)
            if kernel is None
            else kernel
        )

    def forward(self, x):
        return torchgp.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))


def data(n=12, d=1, dtype=torch.float64, seed=0, batch=()):
    g = torch.Generator().manual_seed(seed)
    X = torch.rand(*batch, n, d, generator=g, dtype=dtype) * 4 - 2
    y = torch.sin(2 * X).sum(-1) + 0.1 * torch.randn(*batch, n, generator=g, dtype=dtype)
    return X, y


def make_model(n=12, d=1, dtype=torch.float64, seed=0, noise=0.05, lengthscale=0.7, outputscale=1.3, constant=0.2):
    X, y = data(n, d, dtype, seed)
    lik = torchgp.likelihoods.GaussianLikelihood()
    model = ExactModel(X, y, lik).to(dtype)
    model.initialize(
        **{
            "likelihood.noise": noise,
            "covar_module.base_kernel.lengthscale": lengthscale,
            "covar_module.outputscale": outputscale,
            "mean_module.constant": constant,
        }
    )
    return model, X, y


def rbf_numpy(A, B, lengthscale, outputscale):
    import numpy as np

    d2 = ((A[:, None, :] - B[None, :, :]) ** 2).sum(-1)
    return outputscale * np.exp(-0.5 * d2 / lengthscale**2)
