"""The batched exact GP the batched-fit tests fit: constant mean, ScaleKernel(ARD Matérn-5/2), float64."""

from __future__ import annotations

import torch

import torchgp


def batched_mll(X, y, batch_shape=torch.Size()):
    """``ExactMarginalLogLikelihood`` of a GP on ``X (*batch, n, d)``, ``y (*batch, n)`` with ``batch_shape``."""

    class GP(torchgp.models.ExactGP):
        def __init__(self, lik):
            super().__init__(X, y, lik)
            self.mean_module = torchgp.means.ConstantMean(batch_shape=batch_shape)
            base = torchgp.kernels.MaternKernel(nu=2.5, ard_num_dims=X.shape[-1], batch_shape=batch_shape)
            self.covar_module = torchgp.kernels.ScaleKernel(base, batch_shape=batch_shape)

        def forward(self, x):
            return torchgp.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))

    lik = torchgp.likelihoods.GaussianLikelihood(batch_shape=batch_shape)
    return torchgp.mlls.ExactMarginalLogLikelihood(lik, GP(lik).double())
