"""Online variational conditioning: ApproximateGP.get_fantasy_model against closed forms and GPyTorch 1.15.2."""

from __future__ import annotations

import gpytorch
import pytest
import torch

import torchgp
from tests._tol import assert_close
from torchgp.errors import ModelTypeError, NumericalWarning
from torchgp.variational import CiqVariationalStrategy, UnwhitenedVariationalStrategy, VariationalStrategy

from ._helpers import HYPERS, SVGP, toy_data
from ._models import GPySVGP

D = torch.float64
NOISE = 0.05


def _kernel(model, A, B):
    return model.covar_module(A, B).to_dense()


def _titsias_q(model, X, y):
    """Set q(u) to the optimum of the ELBO for fixed hyperparameters (Titsias 2009, eq. (10)); returns (m_u, S_u)."""
    s = model.variational_strategy
    Z = s.inducing_points.detach()
    m = Z.shape[-2]
    with torch.no_grad():
        K = _kernel(model, Z, Z) + s._jitter(D) * torch.eye(m, dtype=D)
        K_zx = _kernel(model, Z, X)
        r = y - model.mean_module(X)
        Sigma = K + K_zx @ K_zx.mT / NOISE  # S_u = K Σ⁻¹ K, m_u = σ⁻² K Σ⁻¹ K_zx r
        S_u = K @ torch.linalg.solve(Sigma, K)
        m_u = K @ torch.linalg.solve(Sigma, K_zx @ r) / NOISE
        q = s._variational_distribution
        if isinstance(s, UnwhitenedVariationalStrategy):
            q.variational_mean.copy_(m_u + model.mean_module(Z))
            q.chol_variational_covar.copy_(torch.linalg.cholesky(S_u))
        else:
            L = torch.linalg.cholesky(K)
            if isinstance(s, CiqVariationalStrategy):
                e, U = torch.linalg.eigh(K)
                L = U @ (e.sqrt().unsqueeze(-1) * U.mT)
            Li = torch.linalg.inv(L)
            q.variational_mean.copy_(Li @ m_u)
            q.chol_variational_covar.copy_(torch.linalg.cholesky(Li @ S_u @ Li.mT))
    s.variational_params_initialized.fill_(1)
    return m_u, S_u


def _model(Z, strategy_cls=VariationalStrategy):
    model = SVGP(Z.clone(), strategy_cls=strategy_cls).double()
    model.initialize(**HYPERS)
    lik = torchgp.likelihoods.GaussianLikelihood().double()
    lik.noise = NOISE
    model.likelihood = lik
    return model


def _new_data(q=5, seed=7):
    g = torch.Generator().manual_seed(seed)
    Xn = torch.rand(q, 1, generator=g, dtype=D) * 2 - 1
    yn = torch.sin(3 * Xn).squeeze(-1) + 0.1 * torch.randn(q, generator=g, dtype=D)
    return Xn, yn


def _q_conditioned(model, m_u, S_u, Xn, yn, Xs):
    """Bayes' rule on the SVGP's q(f): the joint q(f([Xn; X*])) conditioned on yn = f(Xn) + ε, densely."""
    s = model.variational_strategy
    Z = s.inducing_points.detach()
    with torch.no_grad():
        K = _kernel(model, Z, Z) + s._jitter(D) * torch.eye(Z.shape[-2], dtype=D)
        P = torch.cat([Xn, Xs])
        A = torch.linalg.solve(K, _kernel(model, Z, P))  # K⁻¹ K_zp
        mean = model.mean_module(P) + A.mT @ m_u
        cov = _kernel(model, P, P) - A.mT @ (K - S_u) @ A
        q = Xn.shape[0]
        C = cov[:q, :q] + NOISE * torch.eye(q, dtype=D)
        gain = torch.linalg.solve(C, cov[:q, q:]).mT
        return mean[q:] + gain @ (yn - mean[:q]), cov[q:, q:] - gain @ cov[:q, q:]


@pytest.mark.parametrize("strategy_cls", [VariationalStrategy, UnwhitenedVariationalStrategy, CiqVariationalStrategy])
def test_fantasy_is_bayes_rule_on_the_variational_posterior(strategy_cls):
    X, y = toy_data(n=30)
    model = _model(X[:7], strategy_cls)
    m_u, S_u = _titsias_q(model, X, y)
    Xn, yn = _new_data()
    Xs = torch.linspace(-1, 1, 9, dtype=D).unsqueeze(-1)
    fantasy = model.get_fantasy_model(Xn, yn)
    assert isinstance(fantasy, torchgp.models.ExactGP)
    assert fantasy.train_inputs[0].shape == (7 + 5, 1)
    with torch.no_grad():
        pred = fantasy(Xs)
    mean, cov = _q_conditioned(model, m_u, S_u, Xn, yn, Xs)
    # the exact GP's K(X*, X*) carries no jitter; the rest is the identity of Maddox et al. (2021), eq. (5)
    assert_close(pred.mean, mean, loose=1e2)
    assert_close(pred.covariance_matrix, cov, loose=1e3)


def test_no_new_information_reproduces_the_svgp():
    # A new point with enormous noise carries nothing: the fantasy model predicts what the SVGP predicts
    X, y = toy_data(n=30)
    model = _model(X[:7])
    _titsias_q(model, X, y)
    Xs = torch.linspace(-1, 1, 9, dtype=D).unsqueeze(-1)
    fantasy = model.get_fantasy_model(X[:1], y[:1])
    fantasy.likelihood.train_noise[..., -1, -1] = 1e12
    with torch.no_grad():
        a, b = fantasy(Xs), model(Xs)
    assert_close(a.mean, b.mean, loose=1e3)
    assert_close(a.variance, b.variance - model.variational_strategy._jitter(D), loose=1e3)


def test_inducing_points_at_the_data_give_the_exact_gp_on_old_and_new_data():
    # Z = X_old: Titsias' optimum is the exact posterior, so conditioning on new data is the exact GP on all data
    X, y = toy_data(n=12)
    model = _model(X)
    model.variational_strategy.jitter_val = 1e-10
    _titsias_q(model, X, y)
    Xn, yn = _new_data(q=4)
    fantasy = model.get_fantasy_model(Xn, yn)
    Xs = torch.linspace(-1, 1, 7, dtype=D).unsqueeze(-1)
    Xa, ya = torch.cat([X, Xn]), torch.cat([y, yn])
    with torch.no_grad():
        pred = fantasy(Xs)
        Kaa = _kernel(model, Xa, Xa) + NOISE * torch.eye(16, dtype=D)
        Ksa = _kernel(model, Xs, Xa)
        mean = model.mean_module(Xs) + Ksa @ torch.linalg.solve(Kaa, ya - model.mean_module(Xa))
        cov = _kernel(model, Xs, Xs) - Ksa @ torch.linalg.solve(Kaa, Ksa.mT)
    assert_close(pred.mean, mean, loose=1e3)
    assert_close(pred.covariance_matrix, cov, loose=1e3)


def test_batch_of_fantasy_targets():
    X, y = toy_data(n=20)
    model = _model(X[:6])
    _titsias_q(model, X, y)
    Xn, yn = _new_data(q=3)
    targets = torch.stack([yn, yn + 1.0])
    fantasy = model.get_fantasy_model(Xn, targets)
    Xs = torch.linspace(-1, 1, 5, dtype=D).unsqueeze(-1)
    with torch.no_grad():
        pred = fantasy(Xs)
        one = model.get_fantasy_model(Xn, yn + 1.0)(Xs)
    assert pred.mean.shape == (2, 5)
    assert_close(pred.mean[1], one.mean)
    assert_close(pred.variance[1], one.variance)
    assert torch.allclose(pred.variance[0], pred.variance[1])  # the covariance depends on the inputs only


def test_likelihood_at_test_inputs_adds_the_svgp_noise():
    X, y = toy_data(n=20)
    model = _model(X[:6])
    _titsias_q(model, X, y)
    Xn, yn = _new_data(q=3)
    fantasy = model.get_fantasy_model(Xn, yn)
    Xs = torch.linspace(-1, 1, 5, dtype=D).unsqueeze(-1)
    with torch.no_grad():
        f = fantasy(Xs)
        assert_close(fantasy.likelihood(f, Xs).variance, f.variance + NOISE)
        assert_close(fantasy.likelihood(f).variance, f.variance + NOISE)


def test_untrained_q_warns_and_stays_finite():
    X, _ = toy_data(n=10)
    model = _model(X[:4])
    model.variational_strategy._initialize()  # q = the prior (S_v = I): nothing learnt yet
    with pytest.warns(NumericalWarning, match="capped"):
        fantasy = model.get_fantasy_model(X[:2], torch.zeros(2, dtype=D))
    with torch.no_grad():
        assert torch.isfinite(fantasy(X).mean).all()


def test_non_gaussian_likelihood_is_refused():
    X, _ = toy_data(n=10)
    model = _model(X[:4])
    model.likelihood = torchgp.likelihoods.BernoulliLikelihood()
    with pytest.raises(ModelTypeError, match="GaussianLikelihood"):
        model.get_fantasy_model(X[:2], torch.ones(2, dtype=D))
    del model.likelihood
    with pytest.raises(ModelTypeError, match="model.likelihood"):
        model.get_fantasy_model(X[:2], torch.ones(2, dtype=D))


def _q_with_spectrum(model, seed=0):
    """A q(v) whose covariance has eigenvalues in [0.1, 0.7] (well inside the prior) and a random mean."""
    g = torch.Generator().manual_seed(seed)
    s = model.variational_strategy
    m = s.inducing_points.shape[-2]
    Q, _ = torch.linalg.qr(torch.randn(m, m, generator=g, dtype=D))
    S_v = Q @ torch.diag(torch.linspace(0.1, 0.7, m, dtype=D)) @ Q.mT
    q = s._variational_distribution
    with torch.no_grad():
        q.variational_mean.copy_(torch.randn(m, generator=g, dtype=D))
        q.chol_variational_covar.copy_(torch.linalg.cholesky(S_v))
    s.variational_params_initialized.fill_(1)


def test_matches_gpytorch_get_fantasy_model():
    X, _ = toy_data(n=30)
    model = _model(X[:7])
    model.variational_strategy.jitter_val = 1e-10  # GPyTorch factorises K_zz without jitter
    _q_with_spectrum(model)
    theirs = GPySVGP(X[:7].clone()).double()
    theirs.variational_strategy.jitter_val = 1e-10
    theirs.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("likelihood.")})
    theirs.likelihood = gpytorch.likelihoods.GaussianLikelihood().double()
    theirs.likelihood.noise = NOISE
    Xn, yn = _new_data()
    mine = model.get_fantasy_model(Xn, yn)
    gp = theirs.get_fantasy_model(Xn, yn)
    # the same pseudo-points (GPyTorch's documented intermediate) and the same training data
    with torch.no_grad():
        g_noise, g_mean = theirs.variational_strategy.pseudo_points
        Z = X[:7]
        g_targets = g_mean.squeeze(-1) + model.mean_module(Z)
    assert_close(mine.train_inputs[0], gp.train_inputs[0])
    assert_close(mine.train_targets, gp.train_targets.detach(), loose=1e3)
    assert_close(mine.train_targets[:7], g_targets, loose=1e3)
    assert_close(mine.likelihood.train_noise[:7, :7], g_noise, loose=1e3)
    # predictions: the exact GP GPyTorch's docstring describes, built from GPyTorch's pseudo-points. (The model
    # GPyTorch 1.15.2 returns predicts with the noise σ²I at the pseudo-points instead of their covariance: its
    # own predictions are those of that other GP, several units off here, so they are not the reference.)
    Xs = torch.linspace(-1, 1, 9, dtype=D).unsqueeze(-1)
    P = torch.cat([Z, Xn])
    with torch.no_grad():
        noise = torch.block_diag(g_noise, NOISE * torch.eye(5, dtype=D))
        K_pp = _kernel(model, P, P) + noise
        K_sp = _kernel(model, Xs, P)
        mean = model.mean_module(Xs) + K_sp @ torch.linalg.solve(K_pp, gp.train_targets - model.mean_module(P))
        cov = _kernel(model, Xs, Xs) - K_sp @ torch.linalg.solve(K_pp, K_sp.mT)
        pred = mine(Xs)
    assert_close(pred.mean, mean, loose=1e3)
    assert_close(pred.covariance_matrix, cov, loose=1e3)


def test_fantasy_of_a_fantasy_equals_one_step_on_all_new_points():
    X, y = toy_data(n=20)
    model = _model(X[:6])
    _titsias_q(model, X, y)
    Xn, yn = _new_data(q=4)
    two = model.get_fantasy_model(Xn[:2], yn[:2]).get_fantasy_model(Xn[2:], yn[2:])
    one = model.get_fantasy_model(Xn, yn)
    Xs = torch.linspace(-1, 1, 5, dtype=D).unsqueeze(-1)
    with torch.no_grad():
        a, b = two(Xs), one(Xs)
    assert_close(a.mean, b.mean)
    assert_close(a.covariance_matrix, b.covariance_matrix)
