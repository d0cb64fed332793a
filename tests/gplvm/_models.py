"""The GPLVM of GPyTorch's tutorial, written once for either library (``lib`` is torchgp or gpytorch)."""

from __future__ import annotations

import torch


def make_gplvm(lib, n: int, data_dim: int, latent_dim: int, m: int, latent: str = "variational", seed: int = 0):
    """A batch SVGP over ``data_dim`` outputs on latent inputs ``(n, latent_dim)`` with ``m`` inducing points."""
    gplvm = lib.models.gplvm
    torch.manual_seed(seed)
    Z = torch.randn(data_dim, m, latent_dim, dtype=torch.float64)
    X_init = torch.nn.Parameter(torch.randn(n, latent_dim, dtype=torch.float64))
    log_sigma = torch.randn(n, latent_dim, dtype=torch.float64)
    zeros = torch.zeros(n, latent_dim, dtype=torch.float64)

    class GPLVM(gplvm.BayesianGPLVM):
        def __init__(self):
            self.n = n
            self.batch_shape = torch.Size([data_dim])
            q_u = lib.variational.CholeskyVariationalDistribution(m, batch_shape=self.batch_shape)
            q_f = lib.variational.VariationalStrategy(self, Z, q_u, learn_inducing_locations=True)
            prior_x = lib.priors.NormalPrior(zeros, torch.ones_like(zeros))
            if latent == "variational":
                X = gplvm.VariationalLatentVariable(n, data_dim, latent_dim, X_init, prior_x)
            elif latent == "map":
                X = gplvm.MAPLatentVariable(n, latent_dim, X_init, prior_x)
            else:
                X = gplvm.PointLatentVariable(n, latent_dim, X_init)
            super().__init__(X, q_f)
            self.mean_module = lib.means.ConstantMean(batch_shape=self.batch_shape)
            self.covar_module = lib.kernels.ScaleKernel(
                lib.kernels.RBFKernel(ard_num_dims=latent_dim, batch_shape=self.batch_shape),
                batch_shape=self.batch_shape,
            )

        def forward(self, X):
            return lib.distributions.MultivariateNormal(self.mean_module(X), self.covar_module(X))

    model = GPLVM().double()
    if latent == "variational":
        with torch.no_grad():
            model.X.q_log_sigma.copy_(log_sigma)
    likelihood = lib.likelihoods.GaussianLikelihood(batch_shape=model.batch_shape).double()
    return model, likelihood
