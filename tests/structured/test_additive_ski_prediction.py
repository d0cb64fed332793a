"""Additive KISS-GP (``AdditiveStructureKernel`` over 1-D ``GridInterpolationKernel``) predicts from grid caches."""

from __future__ import annotations

import torch

import torchgp
import torchgp as gpytorch
from tests._tol import assert_close
from tests.structured._models import GP
from torchgp.models.love import SKIPredictionCache, interpolated_parts

D64 = torch.float64


def _model(n=400, d=3, grid=60):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, d, generator=g, dtype=D64)
    y = torch.sin(5 * x).sum(-1) + 0.1 * torch.randn(n, generator=g, dtype=D64)
    ski = gpytorch.kernels.GridInterpolationKernel(gpytorch.kernels.ScaleKernel(gpytorch.kernels.RBFKernel()), grid, 1)
    model = GP(x, y, gpytorch.kernels.AdditiveStructureKernel(ski, num_dims=d)).double()
    model.likelihood.noise = 0.05
    return model, x, y


def _dense_posterior(model, x, y, xs):
    K = model.covar_module(x).to_dense() + model.likelihood.noise * torch.eye(len(x), dtype=D64)
    Ks = model.covar_module(xs, x).to_dense()
    c = model.mean_module.constant
    mean = c + Ks @ torch.linalg.solve(K, y - c)
    var = model.covar_module(xs, diag=True) - (Ks * torch.linalg.solve(K, Ks.T).T).sum(-1)
    return mean.detach(), var.detach()


def test_additive_ski_operator_is_a_sum_of_symmetric_interpolated_terms():
    model, x, _ = _model()
    parts = interpolated_parts(model.covar_module(x))
    assert parts is not None and len(parts) == 3


def test_additive_ski_predictions_use_the_grid_caches_and_equal_the_dense_posterior():
    model, x, y = _model()
    xs = torch.rand(15, 3, generator=torch.Generator().manual_seed(5), dtype=D64) * 0.9 + 0.05
    mean_ref, var_ref = _dense_posterior(model, x, y, xs)
    model.eval()
    with (
        torch.no_grad(),
        torchgp.settings.max_cholesky_size(100),
        torchgp.settings.eval_cg_tolerance(1e-12),
        torchgp.settings.fast_pred_var(),
        torchgp.settings.max_root_decomposition_size(200),
    ):
        pred = model(xs)
        cov = pred.lazy_covariance_matrix
        assert isinstance(cov._ski, SKIPredictionCache)
        assert cov._ski.covar_cache.shape[-2] == 3 * 60  # the stacked grids, not n
        assert_close(pred.mean, mean_ref, loose=1e3)
        # LOVE's rank-200 Krylov root: the variances to the Lanczos accuracy
        assert (pred.variance - var_ref).abs().max() < 1e-6 * float(var_ref.abs().max()) + 1e-8
