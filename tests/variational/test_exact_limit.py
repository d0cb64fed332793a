"""Oracle: SVGP / SGPR with Z = X equal the exact GP (posterior and marginal likelihood)."""

from __future__ import annotations

import pytest
import torch

import torchgp
from torchgp.variational import (
    NaturalVariationalDistribution,
    UnwhitenedVariationalStrategy,
    VariationalStrategy,
)

from ._helpers import HYPERS, SVGP, ExactModel, SGPRModel, tol, toy_data

NOISE = 0.05


@pytest.fixture(autouse=True)
def _small_jitter():
    # the comparison is exact up to the jitter on K_zz; a smaller one than the default makes it tight
    with torchgp.settings.variational_cholesky_jitter(1e-10):
        yield


def _exact(X, y):
    lik = torchgp.likelihoods.GaussianLikelihood().double()
    lik.noise = NOISE
    model = ExactModel(X, y, lik).double().initialize(**HYPERS)
    mll = torchgp.mlls.ExactMarginalLogLikelihood(lik, model)
    with torch.no_grad():
        exact_mll = mll(model(X), y).item() * X.shape[0]
    model.eval()
    return model, exact_mll


def _set_whitened_optimum(model, X, y, noise):
    """Closed-form optimal q(v) for a Gaussian likelihood: Λ = I + Aᵀ... with A = L⁻¹K_zx (Titsias 2009)."""
    with torch.no_grad():
        Z = model.variational_strategy.inducing_points
        K_zz = model.covar_module(Z).to_dense()
        K_zx = model.covar_module(Z, X).to_dense()
        jitter = torchgp.settings.variational_cholesky_jitter.value(Z.dtype)
        L = torch.linalg.cholesky(K_zz + jitter * torch.eye(Z.shape[0], dtype=Z.dtype))
        A = torch.linalg.solve_triangular(L, K_zx, upper=False)
        prec = torch.eye(Z.shape[0], dtype=Z.dtype) + A @ A.mT / noise
        S = torch.linalg.inv(prec)
        m = S @ A @ (y - model.mean_module.constant) / noise
        q = model.variational_strategy._variational_distribution
        q.variational_mean.copy_(m)
        q.chol_variational_covar.copy_(torch.linalg.cholesky(S))
        model.variational_strategy.variational_params_initialized.fill_(1)


def _elbo(model, lik, X, y):
    mll = torchgp.mlls.VariationalELBO(lik, model, num_data=X.shape[0])
    with torch.no_grad():
        return mll(model(X), y).item() * X.shape[0]


def test_whitened_svgp_at_optimum_equals_exact_gp():
    X, y = toy_data()
    exact, exact_mll = _exact(X, y)
    model = SVGP(X.clone()).double().initialize(**HYPERS)
    lik = torchgp.likelihoods.GaussianLikelihood().double()
    lik.noise = NOISE
    _set_whitened_optimum(model, X, y, NOISE)
    assert _elbo(model, lik, X, y) == pytest.approx(exact_mll, abs=1e-3)
    Xs = torch.linspace(-1.2, 1.2, 17, dtype=torch.float64).unsqueeze(-1)
    model.eval()
    with torch.no_grad():
        q, p = model(Xs), exact(Xs)
        torch.testing.assert_close(q.mean, p.mean, **tol(torch.float64, 1e4))
    torch.testing.assert_close(q.variance, p.variance, **tol(torch.float64, 1e4))
    torch.testing.assert_close(q.covariance_matrix, p.covariance_matrix, **tol(torch.float64, 1e4))


@pytest.mark.parametrize("strategy_cls", [VariationalStrategy, UnwhitenedVariationalStrategy])
def test_one_ngd_step_reaches_exact_gp(strategy_cls):
    """Natural gradient with lr = 1 on a conjugate model: one step to the optimum (Salimbeni et al. 2018)."""
    X, y = toy_data()
    exact, exact_mll = _exact(X, y)
    model = (
        SVGP(X.clone(), dist_cls=NaturalVariationalDistribution, strategy_cls=strategy_cls)
        .double()
        .initialize(**HYPERS)
    )
    lik = torchgp.likelihoods.GaussianLikelihood().double()
    lik.noise = NOISE
    mll = torchgp.mlls.VariationalELBO(lik, model, num_data=X.shape[0])
    ngd = torchgp.optim.NGD(model.variational_parameters(), num_data=X.shape[0], lr=1.0)
    before = _elbo(model, lik, X, y)
    ngd.zero_grad()
    (-mll(model(X), y)).backward()
    ngd.step()
    after = _elbo(model, lik, X, y)
    assert before < exact_mll - 1.0  # the step did real work
    assert after == pytest.approx(exact_mll, abs=1e-3)
    model.eval()
    Xs = torch.linspace(-1.2, 1.2, 11, dtype=torch.float64).unsqueeze(-1)
    with torch.no_grad():
        q, p = model(Xs), exact(Xs)
    torch.testing.assert_close(q.mean, p.mean, **tol(torch.float64, 1e4))
    torch.testing.assert_close(q.variance, p.variance, **tol(torch.float64, 1e4))


def test_adam_training_converges_to_exact_gp():
    """Whitened Cholesky q trained by Adam (hyperparameters fixed) approaches the exact posterior."""
    X, y = toy_data(n=15)
    exact, exact_mll = _exact(X, y)
    model = SVGP(X.clone(), learn_inducing_locations=False).double().initialize(**HYPERS)
    lik = torchgp.likelihoods.GaussianLikelihood().double()
    lik.noise = NOISE
    mll = torchgp.mlls.VariationalELBO(lik, model, num_data=X.shape[0])
    opt = torch.optim.Adam(model.variational_parameters(), lr=0.05)
    for _ in range(600):
        opt.zero_grad()
        (-mll(model(X), y)).backward()
        opt.step()
    assert _elbo(model, lik, X, y) == pytest.approx(exact_mll, abs=0.05)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(X).mean, exact(X).mean, rtol=0, atol=0.02)


def test_sgpr_with_z_equal_x_is_exact():
    X, y = toy_data()
    exact, exact_mll = _exact(X, y)
    lik = torchgp.likelihoods.GaussianLikelihood().double()
    lik.noise = NOISE
    model = SGPRModel(X, y, lik, X.clone()).double().initialize(**HYPERS)
    mll = torchgp.mlls.SGPRMarginalLogLikelihood(lik, model)
    with torch.no_grad():
        bound = mll(model(X), y).item() * X.shape[0]
    assert bound == pytest.approx(exact_mll, abs=1e-3)
    model.eval()
    Xs = torch.linspace(-1.2, 1.2, 13, dtype=torch.float64).unsqueeze(-1)
    with torch.no_grad():
        q, p = model(Xs), exact(Xs)
    torch.testing.assert_close(q.mean, p.mean, **tol(torch.float64, 1e4))
    torch.testing.assert_close(q.covariance_matrix, p.covariance_matrix, **tol(torch.float64, 1e4))


def test_sgpr_bound_below_exact_with_fewer_inducing_points_and_trains():
    X, y = toy_data(n=60)
    _, exact_mll = _exact(X, y)
    lik = torchgp.likelihoods.GaussianLikelihood().double()
    lik.noise = NOISE
    model = SGPRModel(X, y, lik, X[:6].clone()).double().initialize(**HYPERS)
    mll = torchgp.mlls.SGPRMarginalLogLikelihood(lik, model)
    with torch.no_grad():
        start = mll(model(X), y).item() * 60
    assert start < exact_mll
    opt = torch.optim.Adam([model.inducing_points], lr=0.05)
    for _ in range(60):
        opt.zero_grad()
        (-mll(model(X), y)).backward()
        opt.step()
    with torch.no_grad():
        end = mll(model(X), y).item() * 60
    assert start < end <= exact_mll + 1e-6
