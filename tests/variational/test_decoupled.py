"""Orthogonally decoupled and batch-decoupled strategies: coupled limits, closed forms, GPyTorch 1.15.2's numbers."""

from __future__ import annotations

import gpytorch
import pytest
import torch

import torchgp
from tests._tol import assert_close

from ._helpers import toy_data
from ._models import model_class


def ODGP(Zc, Zm, lib=torchgp):
    """``lib``'s orthogonally decoupled SVGP: Cholesky q over ``Zc (m_c, d)``, a point mass over ``Zm (m_m, d)``."""
    v = lib.variational

    def strategy(model):
        covar = v.VariationalStrategy(model, Zc, v.CholeskyVariationalDistribution(Zc.shape[-2]))
        return v.OrthogonallyDecoupledVariationalStrategy(covar, Zm, v.DeltaVariationalDistribution(len(Zm)))

    return model_class(lib)(strategy)


def _set_od(model, a_scale=1.0, seed=2):
    g = torch.Generator().manual_seed(seed)
    s = model.variational_strategy
    cv = s.base_variational_strategy
    mc, mm = cv.inducing_points.shape[-2], s.inducing_points.shape[-2]
    with torch.no_grad():
        model.mean_module.constant.fill_(0.2)
        model.covar_module.outputscale = 1.4
        model.covar_module.base_kernel.lengthscale = 0.45
        cv._variational_distribution.variational_mean.copy_(torch.randn(mc, generator=g, dtype=torch.float64))
        L = torch.tril(0.3 * torch.randn(mc, mc, generator=g, dtype=torch.float64), -1) + torch.diag(
            0.5 + torch.rand(mc, generator=g, dtype=torch.float64)
        )
        cv._variational_distribution.chol_variational_covar.copy_(L)
        s._variational_distribution.variational_mean.copy_(a_scale * torch.randn(mm, generator=g, dtype=torch.float64))
    cv.variational_params_initialized.fill_(1)
    s.variational_params_initialized.fill_(1)
    return model


def _svgp_from(od):
    from ._helpers import SVGP

    cv = od.variational_strategy.base_variational_strategy
    sv = SVGP(cv.inducing_points.detach()).double()
    state = {
        k.replace("variational_strategy.base_variational_strategy.", "variational_strategy."): v
        for k, v in od.state_dict().items()
        if not k.startswith("variational_strategy._")
        and k not in ("variational_strategy.inducing_points", "variational_strategy.variational_params_initialized")
    }
    sv.load_state_dict(state)
    return sv


def test_equal_sets_with_zero_mean_weights_is_the_coupled_svgp_elbo():
    X, y = toy_data(n=15)
    Z = X[:6].clone()
    od = _set_od(ODGP(Z, Z).double(), a_scale=0.0)
    sv = _svgp_from(od)
    lik = torchgp.likelihoods.GaussianLikelihood().double()
    e_od = torchgp.mlls.VariationalELBO(lik, od, num_data=15)(od(X), y)
    e_sv = torchgp.mlls.VariationalELBO(lik, sv, num_data=15)(sv(X), y)
    assert_close(e_od, e_sv)


def test_equal_sets_is_a_coupled_svgp_with_shifted_whitened_mean():
    # Σ_γ(X, Z) a = Aᵀ (Lᵀ - A_Z + S_v A_Z) a with A = L⁻¹K_ZX: the decoupled mean is a coupled whitened
    # SVGP with m_v' = m_v + (Lᵀ - A_Z + S_v A_Z) a; covariances are the coupled ones.
    X, _ = toy_data(n=11)
    Z = X[:5].clone()
    od = _set_od(ODGP(Z, Z).double())
    sv = _svgp_from(od)
    cv = od.variational_strategy.base_variational_strategy
    eps = cv._jitter(torch.float64)
    with torch.no_grad():
        K = od.covar_module(Z).to_dense()
        L = torch.linalg.cholesky(K + eps * torch.eye(5, dtype=Z.dtype))
        A_Z = torch.linalg.solve_triangular(L, K, upper=False)
        Lv = cv._variational_distribution.chol_variational_covar.tril()
        a = od.variational_strategy._variational_distribution.variational_mean
        shift = (L.T - A_Z + Lv @ Lv.T @ A_Z) @ a
        sv.variational_strategy._variational_distribution.variational_mean.add_(shift)
    p_od, p_sv = od(X), sv(X)
    assert_close(p_od.mean, p_sv.mean)
    assert_close(p_od.covariance_matrix, p_sv.covariance_matrix)
    # KL: coupled part plus ½ aᵀ Σ_γ(Z, Z) a
    S_zz = cv(Z).covariance_matrix
    assert_close(od.variational_strategy.kl_divergence(), cv.kl_divergence() + 0.5 * a @ S_zz @ a)


def test_orthogonally_decoupled_matches_gpytorch():
    X, y = toy_data(n=20)
    Zc, Zm = X[:4].clone(), X[4:14].clone()
    ours = _set_od(ODGP(Zc, Zm).double())
    theirs = _set_od(ODGP(Zc, Zm, lib=gpytorch).double())
    lik_o = torchgp.likelihoods.GaussianLikelihood().double()
    lik_t = gpytorch.likelihoods.GaussianLikelihood().double()
    e_o = torchgp.mlls.VariationalELBO(lik_o, ours, num_data=20)(ours(X), y)
    e_t = gpytorch.mlls.VariationalELBO(lik_t, theirs, num_data=20)(theirs(X), y)
    assert_close(e_o, e_t.detach(), loose=1e2)
    ours.eval()
    theirs.eval()
    xt = torch.linspace(-1, 1, 5, dtype=torch.float64).unsqueeze(-1)
    po, pt = ours(xt), theirs(xt)
    assert_close(po.mean, pt.mean.detach(), loose=1e2)
    assert_close(po.covariance_matrix, pt.covariance_matrix.detach(), loose=1e2)


def test_orthogonally_decoupled_trains_all_parameters():
    torch.manual_seed(0)
    X, y = toy_data(n=30)
    od = ODGP(X[:4].clone(), X[::3].clone()).double()
    names = {n for n, _ in od.named_parameters()}
    assert "variational_strategy.base_variational_strategy._variational_distribution.chol_variational_covar" in names
    assert "variational_strategy._variational_distribution.variational_mean" in names
    lik = torchgp.likelihoods.GaussianLikelihood().double()
    mll = torchgp.mlls.VariationalELBO(lik, od, num_data=30)
    opt = torch.optim.Adam([*od.parameters(), *lik.parameters()], lr=0.05)
    losses = []
    for _ in range(40):
        opt.zero_grad()
        loss = -mll(od(X), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.3


def test_orthogonally_decoupled_needs_a_delta_distribution():
    Z = torch.rand(4, 1, dtype=torch.float64)
    cv = torchgp.variational.VariationalStrategy(None, Z, torchgp.variational.CholeskyVariationalDistribution(4))
    with pytest.raises(torchgp.errors.ModelTypeError, match="DeltaVariationalDistribution"):
        torchgp.variational.OrthogonallyDecoupledVariationalStrategy(
            cv, Z, torchgp.variational.CholeskyVariationalDistribution(4)
        )


# ---------------------------------------------------------------------- batch-decoupled (PPGPR)
def BDGP(Z, lib=torchgp, hyper_batch=torch.Size([1]), q_batch=torch.Size([]), mvbd=None):
    """``lib``'s batch-decoupled SVGP: mean-field q of batch ``q_batch``, hyperparameters of batch ``hyper_batch``."""
    v = lib.variational
    q = v.MeanFieldVariationalDistribution(Z.shape[-2], batch_shape=q_batch)
    strategy = lambda model: v.BatchDecoupledVariationalStrategy(model, Z, q, mean_var_batch_dim=mvbd)  # noqa: E731
    return model_class(lib)(strategy, batch_shape=hyper_batch)


def _set_bd(model, seed=3):
    g = torch.Generator().manual_seed(seed)
    s = model.variational_strategy
    q = s._variational_distribution
    hb = model.mean_module.constant.shape
    with torch.no_grad():
        model.mean_module.constant.copy_(torch.randn(hb, generator=g, dtype=torch.float64))
        model.covar_module.outputscale = 1.0 + torch.rand(
            model.covar_module.outputscale.shape, generator=g, dtype=torch.float64
        )
        ls = model.covar_module.base_kernel.lengthscale
        model.covar_module.base_kernel.lengthscale = 0.3 + 0.3 * torch.rand(ls.shape, generator=g, dtype=torch.float64)
        q.variational_mean.copy_(torch.randn(q.variational_mean.shape, generator=g, dtype=torch.float64))
        q._variational_stddev.copy_(0.3 + torch.rand(q._variational_stddev.shape, generator=g, dtype=torch.float64))
        s.inducing_points.add_(0.05 * torch.randn(s.inducing_points.shape, generator=g, dtype=torch.float64))
    s.variational_params_initialized.fill_(1)
    return model


@pytest.mark.parametrize(
    "hyper_batch,q_batch,mvbd",
    [
        (torch.Size([1]), torch.Size([]), None),
        (torch.Size([2]), torch.Size([]), -1),
        (torch.Size([3, 2]), torch.Size([3]), -1),
        (torch.Size([2, 3]), torch.Size([3]), -2),
    ],
)
def test_batch_decoupled_matches_gpytorch(hyper_batch, q_batch, mvbd):
    X, y = toy_data(n=16)
    Z = X[:5].clone()
    if mvbd == -2:  # the pair sits left of the model batch: inputs and inducing points carry that batch
        X, Z = X.expand(3, 16, 1), Z.expand(3, 5, 1)
    ours = _set_bd(BDGP(Z, hyper_batch=hyper_batch, q_batch=q_batch, mvbd=mvbd).double())
    theirs = _set_bd(BDGP(Z, gpytorch, hyper_batch, q_batch, mvbd).double())
    assert ours.variational_strategy.inducing_points.shape == theirs.variational_strategy.inducing_points.shape
    po, pt = ours(X), theirs(X)
    assert po.mean.shape == (*q_batch, 16)
    assert_close(po.mean, pt.mean.detach(), loose=1e2)
    assert_close(po.covariance_matrix, pt.covariance_matrix.detach(), loose=1e2)
    assert_close(ours.variational_strategy.kl_divergence(), theirs.variational_strategy.kl_divergence().detach())
    lik_o = torchgp.likelihoods.GaussianLikelihood().double()
    lik_t = gpytorch.likelihoods.GaussianLikelihood().double()
    yb = y.expand(*q_batch, 16)
    e_o = torchgp.mlls.PredictiveLogLikelihood(lik_o, ours, num_data=16)(po, yb)
    e_t = gpytorch.mlls.PredictiveLogLikelihood(lik_t, theirs, num_data=16)(pt, yb)
    assert_close(e_o, e_t.detach(), loose=1e2)


def test_batch_decoupled_with_shared_sets_is_the_coupled_svgp():
    # Equal mean/variance inducing sets and shared hyperparameters: the coupled whitened SVGP, whose KL is
    # smaller by the point-mass constant (m/2) log 2π.
    import math

    from ._helpers import SVGP

    X, _ = toy_data(n=12)
    Z = X[:4].clone()
    bd = BDGP(Z).double()
    with torch.no_grad():
        bd.mean_module.constant.fill_(0.3)
        bd.covar_module.outputscale = 1.2
        bd.covar_module.base_kernel.lengthscale = 0.4
        q = bd.variational_strategy._variational_distribution
        q.variational_mean.copy_(torch.tensor([0.5, -1.0, 0.2, 0.7], dtype=torch.float64))
        q._variational_stddev.copy_(torch.tensor([0.4, 0.9, 0.6, 0.3], dtype=torch.float64))
    bd.variational_strategy.variational_params_initialized.fill_(1)
    sv = SVGP(Z, dist_cls=torchgp.variational.MeanFieldVariationalDistribution).double()
    with torch.no_grad():
        sv.mean_module.constant.fill_(0.3)
        sv.covar_module.outputscale = 1.2
        sv.covar_module.base_kernel.lengthscale = 0.4
        sv.variational_strategy._variational_distribution.load_state_dict(q.state_dict())
    sv.variational_strategy.variational_params_initialized.fill_(1)
    pb, ps = bd(X), sv(X)
    assert_close(pb.mean, ps.mean)
    assert_close(pb.covariance_matrix, ps.covariance_matrix)
    assert_close(pb.variance, ps.variance)
    kl_gap = bd.variational_strategy.kl_divergence() - sv.variational_strategy.kl_divergence()
    assert_close(kl_gap, torch.tensor(2 * math.log(2 * math.pi), dtype=torch.float64))


def test_batch_decoupled_trains_the_two_inducing_sets_apart():
    torch.manual_seed(0)
    X, y = toy_data(n=30)
    model = BDGP(X[:6].clone(), hyper_batch=torch.Size([2]), mvbd=-1).double()
    lik = torchgp.likelihoods.GaussianLikelihood().double()
    mll = torchgp.mlls.PredictiveLogLikelihood(lik, model, num_data=30)
    opt = torch.optim.Adam([*model.parameters(), *lik.parameters()], lr=0.05)
    losses = []
    for _ in range(40):
        opt.zero_grad()
        loss = -mll(model(X), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.3
    Zs = model.variational_strategy.inducing_points
    assert Zs.shape == (2, 6, 1) and not torch.allclose(Zs[0], Zs[1])
    assert model.covar_module.base_kernel.lengthscale.shape == (2, 1, 1)


def test_batch_decoupled_rejects_delta_and_positive_dims():
    Z = torch.rand(4, 1, dtype=torch.float64)
    v = torchgp.variational
    with pytest.raises(torchgp.errors.ModelTypeError, match="Gaussian"):
        v.BatchDecoupledVariationalStrategy(None, Z, v.DeltaVariationalDistribution(4))
    with pytest.raises(torchgp.errors.InputError, match="negative"):
        v.BatchDecoupledVariationalStrategy(None, Z, v.MeanFieldVariationalDistribution(4), mean_var_batch_dim=0)
