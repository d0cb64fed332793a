"""VNNGP (NNVariationalStrategy): exact limit k = M - 1, closed forms, GPyTorch 1.15.2's numbers, training."""

from __future__ import annotations

import gpytorch
import pytest
import torch

import torchgp
from tests._tol import assert_close
from torchgp.distributions.kl import gaussian_kl
from torchgp.variational import MeanFieldVariationalDistribution, NNVariationalStrategy

from ._helpers import toy_data
from ._models import model_class


def VNNGP(Z, k, lib=torchgp, **kw):
    """``lib``'s VNNGP: mean-field q over ``Z (m, d)``, ``k`` nearest neighbours, strategy options ``kw``."""
    q = lib.variational.MeanFieldVariationalDistribution(Z.shape[-2])
    return model_class(lib)(lambda model: lib.variational.NNVariationalStrategy(model, Z, q, k=k, **kw))


def _set(model, mean_c=0.0, seed=1):
    g = torch.Generator().manual_seed(seed)
    M = model.variational_strategy.inducing_points.shape[-2]
    with torch.no_grad():
        model.mean_module.constant.fill_(mean_c)
        model.covar_module.outputscale = 1.3
        model.covar_module.base_kernel.lengthscale = 0.5
        q = model.variational_strategy._variational_distribution
        q.variational_mean.copy_(torch.randn(M, generator=g, dtype=torch.float64))
        q._variational_stddev.copy_(0.2 + torch.rand(M, generator=g, dtype=torch.float64))
    model.variational_strategy.variational_params_initialized.fill_(1)
    return model


def _dense_prior(model, Z, jitter):
    out = model.forward(Z)
    K = out.covariance_matrix + jitter * torch.eye(Z.shape[0], dtype=Z.dtype)
    return out.mean, torch.linalg.cholesky(K)


def test_full_kl_with_all_preceding_neighbours_is_the_exact_kl():
    Z, _ = toy_data(n=9)
    model = _set(VNNGP(Z, k=8, jitter_val=1e-6, compute_full_kl=True).double(), mean_c=0.4)
    q = model.variational_strategy._variational_distribution
    mean_p, L_p = _dense_prior(model, Z, 1e-6)
    expected = gaussian_kl(q.variational_mean, torch.diag(q._variational_stddev.abs()), mean_p, L_p)
    assert_close(model.variational_strategy.kl_divergence(), expected.detach(), loose=1e2)


def test_vecchia_kl_with_fewer_neighbours_is_the_sum_of_conditionals():
    # KL(q ‖ p_NN) = E_q[log q] - E_q[log p_NN] by Monte Carlo-free closed form: p_NN is Gaussian with
    # precision (I - B)ᵀ F⁻¹ (I - B), built here densely from the sequential neighbour sets.
    Z, _ = toy_data(n=10)
    k, eps = 3, 1e-6
    model = _set(VNNGP(Z, k=k, jitter_val=eps, compute_full_kl=True).double(), mean_c=-0.2)
    s = model.variational_strategy
    out = model.forward(Z)
    mu, K = out.mean.detach(), out.covariance_matrix.detach() + eps * torch.eye(10, dtype=Z.dtype)
    B = torch.zeros(10, 10, dtype=Z.dtype)
    Fd = torch.zeros(10, dtype=Z.dtype)
    Lk = torch.linalg.cholesky(K[:k, :k])  # first k jointly: chain rule inside the block
    for j in range(k):
        Fd[j] = Lk[j, j] ** 2
        B[j, :j] = torch.linalg.solve_triangular(Lk[:j, :j].T, Lk[j, :j].unsqueeze(-1), upper=True).squeeze(-1)
    for j in range(k, 10):
        nn = s.nn_xinduce_idx[j - k]
        b = torch.linalg.solve(K[nn][:, nn], K[nn, j])
        B[j, nn] = b
        Fd[j] = K[j, j] - b @ K[nn, j]
    IB = torch.eye(10, dtype=Z.dtype) - B
    cov_nn = torch.linalg.inv(IB.T @ torch.diag(1 / Fd) @ IB)
    q = s._variational_distribution
    expected = gaussian_kl(
        q.variational_mean.detach(), torch.diag(q._variational_stddev.detach()), mu, torch.linalg.cholesky(cov_nn)
    )
    assert_close(s.kl_divergence(), expected, loose=1e3)


def test_elbo_equals_full_rank_whitened_svgp_at_k_all_preceding():
    X, y = toy_data(n=8)
    eps = 1e-9
    nn_model = _set(VNNGP(X, k=7, jitter_val=eps, compute_full_kl=True).double(), mean_c=0.3)
    lik = torchgp.likelihoods.GaussianLikelihood().double()
    nn_model.train()
    elbo_nn = torchgp.mlls.VariationalELBO(lik, nn_model, num_data=8)(nn_model(X), y)

    from ._helpers import SVGP

    sv = SVGP(X).double()
    sv.variational_strategy.jitter_val = eps
    sv.load_state_dict(
        {k: v for k, v in nn_model.state_dict().items() if "variational_strategy" not in k}, strict=False
    )
    # q(v) = L⁻¹ (q(u) - μ): the whitened image of the mean-field q(u)
    mean_p, L = _dense_prior(nn_model, X, eps)
    q = nn_model.variational_strategy._variational_distribution
    with torch.no_grad():
        m_v = torch.linalg.solve_triangular(L, (q.variational_mean - mean_p).unsqueeze(-1), upper=False).squeeze(-1)
        S_half = torch.linalg.solve_triangular(L, torch.diag(q._variational_stddev), upper=False)
        qd = sv.variational_strategy._variational_distribution
        qd.variational_mean.copy_(m_v)
        qd.chol_variational_covar.copy_(torch.linalg.cholesky(S_half @ S_half.T))
    sv.variational_strategy.variational_params_initialized.fill_(1)
    elbo_sv = torchgp.mlls.VariationalELBO(lik, sv, num_data=8)(sv(X), y)
    assert_close(elbo_nn, elbo_sv, loose=1e3)


def test_prediction_is_the_unwhitened_conditional_on_the_k_nearest():
    Z, _ = toy_data(n=12)
    k, eps = 4, 1e-4
    model = _set(VNNGP(Z, k=k, jitter_val=eps).double(), mean_c=0.5).eval()
    xt = torch.tensor([[0.13], [-0.71]], dtype=torch.float64)
    pred = model(xt)
    q = model.variational_strategy._variational_distribution
    for i in range(2):
        nn = torch.cdist(xt[i : i + 1], Z)[0].argsort()[:k]
        allp = torch.cat([Z[nn], xt[i : i + 1]])
        out = model.forward(allp)
        K, mu = out.covariance_matrix.detach(), out.mean.detach()
        a = torch.linalg.solve(K[:k, :k] + eps * torch.eye(k, dtype=Z.dtype), K[:k, k])
        m = mu[k] + a @ (q.variational_mean.detach()[nn] - mu[:k])
        v = K[k, k] - a @ K[:k, k] + (a**2 * q._variational_stddev.detach()[nn] ** 2).sum()
        assert_close(pred.mean[i], m)
        assert_close(pred.variance[i], v)


def _pair(M=20, k=3, **kw):
    Z, y = toy_data(n=M)
    torch.manual_seed(5)
    ours = _set(VNNGP(Z, k=k, **kw).double())
    torch.manual_seed(5)
    theirs = _set(VNNGP(Z, k=k, lib=gpytorch, **kw).double())
    return Z, y, ours, theirs


@pytest.mark.parametrize("compute_full_kl", [True, False])
def test_matches_gpytorch_elbo_kl_and_predictions(compute_full_kl):
    Z, y, ours, theirs = _pair(compute_full_kl=compute_full_kl, training_batch_size=6)
    lik_o = torchgp.likelihoods.GaussianLikelihood().double()
    lik_t = gpytorch.likelihoods.GaussianLikelihood().double()
    mll_o = torchgp.mlls.VariationalELBO(lik_o, ours, num_data=20)
    mll_t = gpytorch.mlls.VariationalELBO(lik_t, theirs, num_data=20)
    for step in range(5):  # walks the first-k batch and the shuffled minibatches in the same order
        idx = torch.arange(step * 4, step * 4 + 4)
        assert_close(mll_o(ours(Z[idx]), y[idx]), mll_t(theirs(Z[idx]), y[idx]).detach(), loose=1e2)
    ours.eval()
    theirs.eval()
    xt = torch.linspace(-1.2, 1.2, 7, dtype=torch.float64).unsqueeze(-1)
    po, pt = ours(xt), theirs(xt)
    assert_close(po.mean, pt.mean.detach(), loose=1e2)
    assert_close(po.variance, pt.variance.detach(), loose=1e2)


def test_kl_gradient_by_finite_differences():
    Z, _ = toy_data(n=7)
    model = _set(VNNGP(Z, k=2, jitter_val=1e-3, compute_full_kl=True).double())
    strat = model.variational_strategy
    params = [strat._variational_distribution.variational_mean, model.covar_module.base_kernel.raw_lengthscale]
    grads = torch.autograd.grad(strat.kl_divergence(), params)
    h = 1e-6
    for p, g in zip(params, grads):
        flat = p.data.view(-1)
        for i in range(flat.numel()):
            flat[i] += h
            up = strat.kl_divergence().item()
            flat[i] -= 2 * h
            down = strat.kl_divergence().item()
            flat[i] += h
            assert abs((up - down) / (2 * h) - g.view(-1)[i].item()) < 1e-6 * (1 + abs(g.view(-1)[i].item()))


def test_minibatch_training_lowers_the_loss():
    torch.manual_seed(0)
    X, y = toy_data(n=40)
    model = VNNGP(X, k=4, training_batch_size=10).double()
    lik = torchgp.likelihoods.GaussianLikelihood().double()
    mll = torchgp.mlls.VariationalELBO(lik, model, num_data=40)
    opt = torch.optim.Adam([*model.parameters(), *lik.parameters()], lr=0.05)
    model.train()
    losses = []
    for _ in range(60):
        opt.zero_grad()
        loss = -mll(model(X), y)  # full-data likelihood, stochastic KL
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.2


def test_bad_arguments_raise():
    Z, _ = toy_data(n=6)
    with pytest.raises(torchgp.errors.ModelTypeError, match="MeanField"):
        NNVariationalStrategy(None, Z, torchgp.variational.CholeskyVariationalDistribution(6), k=2)
    with pytest.raises(torchgp.errors.InputError, match="k must be"):
        NNVariationalStrategy(None, Z, MeanFieldVariationalDistribution(6), k=6)


def test_an_epoch_of_minibatches_covers_every_point_and_its_estimates_sum_to_the_full_kl():
    Z, _ = toy_data(n=23)
    model = _set(VNNGP(Z, k=3, training_batch_size=5).double())
    s = model.variational_strategy
    full = s._full_kl().detach()
    seen, weighted = [], torch.zeros((), dtype=torch.float64)
    for _ in range(s._total_training_batches):  # 1 first-k batch + ceil(20 / 5) shuffled batches
        f = s(None)
        idx = s.current_training_indices
        assert f.mean.shape == (idx.numel(),)
        assert_close(f.mean, s._variational_distribution.variational_mean[idx].detach())
        seen.append(idx)
        weighted = weighted + s.kl_divergence().detach() * idx.numel() / 23  # undo the M/|J| scaling
    assert torch.equal(torch.cat(seen).sort().values, torch.arange(23))
    assert_close(weighted, full)
