"""Approximate GPs written once for torchgp and GPyTorch, and a fixed random q(u), for the strategy tests."""

from __future__ import annotations

import functools

import gpytorch
import torch


@functools.cache
def model_class(lib):
    """``lib``'s ApproximateGP with ``tests/variational/_helpers.SVGP``'s modules and parameter names.

    ``Model(make_strategy, batch_shape=(), ard_num_dims=None)``: the strategy is ``make_strategy(model)``; constant
    mean and scaled RBF (one lengthscale per input dimension if ``ard_num_dims``) of hyperparameter batch
    ``batch_shape``. ``lib`` is ``torchgp`` or ``gpytorch`` (one class per library).
    """

    class Model(lib.models.ApproximateGP):
        def __init__(self, make_strategy, batch_shape=torch.Size([]), ard_num_dims=None):
            super().__init__(make_strategy(self))
            self.mean_module = lib.means.ConstantMean(batch_shape=batch_shape)
            self.covar_module = lib.kernels.ScaleKernel(
                lib.kernels.RBFKernel(batch_shape=batch_shape, ard_num_dims=ard_num_dims), batch_shape=batch_shape
            )

        def forward(self, x):
            return lib.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))

    return Model


class GPySVGP(model_class(gpytorch)):
    """GPyTorch's twin of ``_helpers.SVGP``: Cholesky q(u) of ``Z (m, d)``'s size under ``strategy_cls``."""

    def __init__(self, Z, strategy_cls=gpytorch.variational.VariationalStrategy):
        q = gpytorch.variational.CholeskyVariationalDistribution(Z.shape[-2])
        super().__init__(lambda model: strategy_cls(model, Z, q))


def set_q(model, seed: int = 3):
    """Give ``model``'s Cholesky q(u) a seeded random mean and a well-conditioned factor (diagonal in [0.3, 0.8]).

    The mean has the distribution's shape ``(*batch, m)``; one ``(m, m)`` factor is shared by every batch member.
    Returns ``model``, float64 values.
    """
    g = torch.Generator().manual_seed(seed)
    s = model.variational_strategy
    m = s.inducing_points.shape[-2]
    q = s._variational_distribution
    with torch.no_grad():
        q.variational_mean.copy_(torch.randn(q.variational_mean.shape, generator=g, dtype=torch.float64))
        L = torch.tril(0.2 * torch.randn(m, m, generator=g, dtype=torch.float64), -1) + torch.diag(
            0.3 + 0.5 * torch.rand(m, generator=g, dtype=torch.float64)
        )
        q.chol_variational_covar.copy_(L.expand_as(q.chol_variational_covar))
    s.variational_params_initialized.fill_(1)
    return model
