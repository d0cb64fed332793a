"""The multitask models of GPyTorch's tutorials, built from either library (``lib`` is torchgp or gpytorch)."""

from __future__ import annotations

import torch

D = torch.float64


def toy_data(n=12, t=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.rand(n, 1, generator=g, dtype=D)
    f = torch.cat([torch.sin(6 * X), torch.cos(5 * X), X, X**2][:t], -1)
    return X, f + 0.1 * torch.randn(n, t, generator=g, dtype=D)


def icm_model(lib, X, Y, rank=1, lik_rank=0, interleaved=True, **lik_kwargs):
    """ICM: ``MultitaskMean``, ``MultitaskKernel``, ``MultitaskGaussianLikelihood`` (GPyTorch's multitask tutorial)."""
    t = Y.shape[-1]

    class ICM(lib.models.ExactGP):
        def __init__(self, x, y, likelihood):
            super().__init__(x, y, likelihood)
            self.mean_module = lib.means.MultitaskMean(lib.means.ConstantMean(), num_tasks=t)
            self.covar_module = lib.kernels.MultitaskKernel(lib.kernels.RBFKernel(), num_tasks=t, rank=rank)

        def forward(self, x):
            mean = self.mean_module(x)
            if interleaved:
                return lib.distributions.MultitaskMultivariateNormal(mean, self.covar_module(x))
            from torchgp.linalg.operators import DenseOperator, KroneckerProductOperator

            B = self.covar_module.task_covar_module.covar_matrix
            K = KroneckerProductOperator(DenseOperator(B), self.covar_module.data_covar_module(x))
            return lib.distributions.MultitaskMultivariateNormal(mean, K, interleaved=False)

    likelihood = lib.likelihoods.MultitaskGaussianLikelihood(num_tasks=t, rank=lik_rank, **lik_kwargs)
    return ICM(X, Y, likelihood).double()


def batch_independent_model(lib, X, Y):
    """Independent outputs through ``batch_shape`` and ``from_batch_mvn`` (GPyTorch's batch-independent tutorial)."""
    t = Y.shape[-1]

    class BatchIndependent(lib.models.ExactGP):
        def __init__(self, x, y, likelihood):
            super().__init__(x, y, likelihood)
            self.mean_module = lib.means.ConstantMean(batch_shape=torch.Size([t]))
            self.covar_module = lib.kernels.ScaleKernel(
                lib.kernels.RBFKernel(batch_shape=torch.Size([t])), batch_shape=torch.Size([t])
            )

        def forward(self, x):
            mvn = lib.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))
            return lib.distributions.MultitaskMultivariateNormal.from_batch_mvn(mvn)

    return BatchIndependent(X, Y, lib.likelihoods.MultitaskGaussianLikelihood(num_tasks=t)).double()


def copy_parameters(src, dst, scale=0.5, seed=1):
    """Random parameter values, the same in both models (matched by name)."""
    g = torch.Generator().manual_seed(seed)
    theirs = dict(dst.named_parameters())
    with torch.no_grad():
        for name, p in src.named_parameters():
            p.copy_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
            theirs[name].copy_(p)
