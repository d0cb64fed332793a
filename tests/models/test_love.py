"""LOVE (fast_pred_var) and fast_pred_samples: Lanczos roots against exact posteriors and GPyTorch."""

from __future__ import annotations

import pytest
import torch

import torchgp
from tests._tol import assert_close
from tests.models._gpytorch_ref import gpytorch_model
from tests.models._models import ExactModel, make_model
from torchgp import settings
from torchgp.models.love import lanczos, lanczos_root, love_inverse_root


def _big_model(n=2000, seed=0):
    """A 1-D RBF exact GP at n = 2000 (cheap kernel, float64)."""
    g = torch.Generator().manual_seed(seed)
    X = torch.rand(n, 1, generator=g, dtype=torch.float64) * 4 - 2
    y = torch.sin(3 * X[:, 0]) + 0.1 * torch.randn(n, generator=g, dtype=torch.float64)
    model = ExactModel(X, y, torchgp.likelihoods.GaussianLikelihood()).double()
    model.initialize(
        **{"likelihood.noise": 0.01, "covar_module.base_kernel.lengthscale": 0.5, "covar_module.outputscale": 1.0}
    )
    return model.eval()


def test_lanczos_basis_is_orthonormal_and_projects_the_matrix():
    g = torch.Generator().manual_seed(0)
    A0 = torch.randn(2, 40, 40, generator=g, dtype=torch.float64)
    A = A0 @ A0.mT + 40 * torch.eye(40, dtype=torch.float64)
    Q, T = lanczos(lambda v: A @ v, (2,), 40, 15, torch.float64)
    assert Q.shape == (2, 40, 15) and T.shape == (2, 15, 15)
    assert_close(Q.mT @ Q, torch.eye(15, dtype=torch.float64).expand(2, 15, 15), loose=100)
    assert_close(T, Q.mT @ A @ Q, loose=100)
    # tridiagonal: Lanczos, not an arbitrary basis
    far = T.triu(2)
    assert far.abs().max() < 1e-8 * T.abs().max()


def test_lanczos_restarts_when_the_krylov_space_is_exhausted():
    """Identity plus rank 2 has a Krylov space of dimension 3: the basis must stay orthonormal beyond it."""
    g = torch.Generator().manual_seed(1)
    U = torch.randn(30, 2, generator=g, dtype=torch.float64)
    A = torch.eye(30, dtype=torch.float64) + U @ U.T
    Q, T = lanczos(lambda v: A @ v, (), 30, 8, torch.float64)
    assert torch.isfinite(Q).all()
    assert_close(Q.mT @ Q, torch.eye(8, dtype=torch.float64), loose=100)
    assert_close(T, Q.mT @ A @ Q, loose=100)
    # with the whole space the inverse root is exact
    R = love_inverse_root(lambda v: A @ v, (), 30, 30, torch.float64)
    assert_close(R @ R.T, torch.linalg.inv(A), loose=1e3)
    S = lanczos_root(lambda v: A @ v, (), 30, 30, torch.float64)
    assert_close(S @ S.T, A, loose=1e3)


def test_love_variances_within_1e3_of_exact_at_n_2000():
    model = _big_model()
    Xs = torch.linspace(-2.2, 2.2, 60, dtype=torch.float64).unsqueeze(-1)
    with torch.no_grad():
        exact = model(Xs).variance
        with settings.fast_pred_var():
            pred = model(Xs)
            love = pred.variance
            exact_mean = model(Xs).mean
    R = model._cache[2].love_root()
    assert R.shape == (2000, 100)  # the Lanczos path (n > k), not the exact factor
    rel = ((love - exact) / exact).abs().max()
    assert rel < 1e-3, rel
    assert_close(pred.mean, exact_mean)


@pytest.mark.parametrize("dense_ok", [True, False], ids=["dense_matvecs", "blockwise_matvecs"])
def test_love_on_the_iterative_path(dense_ok):
    model = _big_model(n=300, seed=3)
    Xs = torch.linspace(-2, 2, 20, dtype=torch.float64).unsqueeze(-1)
    budget = 2**40 if dense_ok else 300 * 300 * 8 - 1  # below it the Lanczos products go block by block
    with torch.no_grad():
        exact = model(Xs).variance
        with settings.max_cholesky_size(100), settings.fast_pred_var(), settings.max_dense_memory(budget):
            model._cache = None
            love = model(Xs).variance
            assert not model._cache[2].use_cholesky
    assert ((love - exact) / exact).abs().max() < 1e-3


def test_love_root_is_exact_for_n_up_to_k():
    model, _, _ = make_model(n=30)
    model.eval()
    Xs = torch.linspace(-2, 2, 9, dtype=torch.float64).unsqueeze(-1)
    with torch.no_grad():
        exact = model(Xs)
        with settings.fast_pred_var():
            love = model(Xs)
    assert_close(love.variance, exact.variance)
    assert_close(love.covariance_matrix, exact.covariance_matrix)


def test_love_rank_follows_the_setting_and_covariance_products_use_it():
    model = _big_model(n=400, seed=5)
    Xs = torch.linspace(-2, 2, 12, dtype=torch.float64).unsqueeze(-1)
    rhs = torch.randn(12, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        exact = model(Xs).covariance_matrix
        with settings.fast_pred_var(), settings.max_root_decomposition_size(60):
            pred = model(Xs)
            dense, prod = pred.covariance_matrix, pred.lazy_covariance_matrix.matmul(rhs)
            assert model._cache[2].love_root().shape[-1] == 60
    assert_close(prod, dense @ rhs)
    torch.testing.assert_close(dense, exact, rtol=1e-3, atol=1e-3 * exact.diagonal().min().item())


def test_love_matches_gpytorch_fast_pred_var():
    model = _big_model(n=500, seed=2)
    X, y = model.train_inputs[0], model.train_targets
    ref = gpytorch_model(X, y, noise=0.01, lengthscale=0.5, outputscale=1.0, constant=0.0)
    Xs = torch.linspace(-2, 2, 25, dtype=torch.float64).unsqueeze(-1)
    import gpytorch

    with torch.no_grad():
        with gpytorch.settings.fast_pred_var():
            theirs = ref(Xs)
            theirs_mean, theirs_var = theirs.mean, theirs.variance
        with settings.fast_pred_var():
            ours = model(Xs)
            ours_mean, ours_var = ours.mean, ours.variance
        exact = model(Xs).variance
    assert_close(ours_mean, theirs_mean)
    # both approximate the exact variance; ours is at least as close as GPyTorch's, and they agree
    assert ((ours_var - exact) / exact).abs().max() <= max(1e-3, ((theirs_var - exact) / exact).abs().max())
    torch.testing.assert_close(ours_var, theirs_var, rtol=1e-2, atol=1e-6)


@pytest.mark.parametrize("n", [40, 300])
def test_fast_pred_samples_covariance_matches_the_posterior(n):
    model = _big_model(n=n, seed=4)
    Xs = torch.linspace(-1.5, 1.5, 6, dtype=torch.float64).unsqueeze(-1)
    torch.manual_seed(0)
    N = 20000
    with torch.no_grad():
        exact = model(Xs)
        cov = exact.covariance_matrix
        with settings.fast_pred_samples():
            samples = model(Xs).rsample(torch.Size([N]))
    assert samples.shape == (N, 6)
    emp = torch.cov(samples.T)
    # Monte-Carlo standard error of a sample covariance: sqrt((Σ_ii Σ_jj + Σ_ij²) / N)
    se = ((cov.diagonal()[:, None] * cov.diagonal()[None, :] + cov**2) / N).sqrt()
    assert ((emp - cov).abs() <= 5 * se).all()
    assert ((samples.mean(0) - exact.mean).abs() <= 5 * (cov.diagonal() / N).sqrt()).all()


def test_fast_pred_samples_take_low_rank_base_samples():
    model = _big_model(n=200, seed=6)
    Xs = torch.linspace(-1, 1, 150, dtype=torch.float64).unsqueeze(-1)
    with torch.no_grad(), settings.fast_pred_samples(), settings.max_root_decomposition_size(20):
        pred = model(Xs)
        base = torch.randn(7, 20, dtype=torch.float64)
        s = pred.rsample(torch.Size([7]), base_samples=base)
        again = pred.rsample(torch.Size([7]), base_samples=base)
    assert s.shape == (7, 150)
    assert_close(s, again)
