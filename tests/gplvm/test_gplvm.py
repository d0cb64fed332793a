"""Bayesian GPLVM: GPyTorch's tutorial pattern, latent recovery, the KL term's closed form, GPyTorch's ELBO."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.stats import spearmanr

import torchgp
from tests._tol import assert_close
from tests.gplvm._models import make_gplvm
from torchgp.errors import InputError, ModelTypeError, ShapeError
from torchgp.models.gplvm import MAPLatentVariable, PointLatentVariable, VariationalLatentVariable

N, D, Q, M = 12, 3, 2, 4


def _targets(n=N, d=D, seed=3):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _elbo(lib, model, likelihood, Y, idx, seed=5, **kwargs):
    mll = lib.mlls.VariationalELBO(likelihood, model, num_data=Y.shape[0], **kwargs)
    torch.manual_seed(seed)
    X = model.sample_latent_variable()
    return mll(model(X[idx]), Y[idx].T)


def test_tutorial_pattern_trains_on_minibatches():
    model, likelihood = make_gplvm(torchgp, N, D, Q, M, "variational")
    Y = _targets()
    mll = torchgp.mlls.VariationalELBO(likelihood, model, num_data=N)
    opt = torch.optim.Adam([*model.parameters(), *likelihood.parameters()], lr=0.05)
    gen = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(30):
        idx = torch.randperm(N, generator=gen)[:6]
        opt.zero_grad()
        sample = model.sample_latent_variable()
        out = model(sample[idx])
        assert out.mean.shape == (D, 6)
        loss = -mll(out, Y[idx].T).sum()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) < sum(losses[:5])
    assert model.X.q_mu.grad is not None and model.X.q_log_sigma.grad is not None
    names = [name for name, _ in model.named_added_loss_terms()]
    assert names == ["X.x_kl"]
    model.eval()
    with torch.no_grad():
        pred = likelihood(model(model.X.q_mu))
    assert pred.mean.shape == (D, N)


def test_recovers_a_one_dimensional_latent_ordering_on_a_2d_arc():
    n = 25
    t = torch.linspace(0, 1.4 * math.pi, n, dtype=torch.float64)
    Y = torch.stack([torch.cos(t), torch.sin(t)], -1)
    Y = Y + 0.01 * torch.randn(Y.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    Yc = Y - Y.mean(0)
    pc1 = Yc @ torch.linalg.svd(Yc, full_matrices=False).Vh[0]
    X_init = (pc1 / pc1.std()).unsqueeze(-1)
    rho_init = abs(spearmanr(t.numpy(), X_init.squeeze(-1).numpy()).statistic)
    assert rho_init < 0.95  # the arc folds over its first principal axis: the ordering is not there at the start
    model, likelihood = make_gplvm(torchgp, n, 2, 1, 8, "point")
    with torch.no_grad():
        model.X.X.copy_(X_init)
    mll = torchgp.mlls.VariationalELBO(likelihood, model, num_data=n)
    opt = torch.optim.Adam([*model.parameters(), *likelihood.parameters()], lr=0.05)
    for _ in range(120):
        opt.zero_grad()
        loss = -mll(model(model.sample_latent_variable()), Y.T).sum()
        loss.backward()
        opt.step()
    rho = abs(spearmanr(t.numpy(), model.X.X.detach().squeeze(-1).numpy()).statistic)
    assert rho >= 0.95


def test_kl_added_loss_equals_the_closed_form():
    model, likelihood = make_gplvm(torchgp, N, D, Q, M, "variational")
    Y = _targets()
    idx = torch.arange(5)
    with_kl = _elbo(torchgp, model, likelihood, Y, idx)
    term = model.X._added_loss_terms["x_kl"]
    mu, sigma = model.X.q_mu, torch.nn.functional.softplus(model.X.q_log_sigma)
    # KL(N(mu, s^2) || N(0, 1)) = (s^2 + mu^2 - 1 - log s^2) / 2, summed, per datum and per output
    closed = 0.5 * (sigma**2 + mu**2 - 1 - torch.log(sigma**2)).sum() / (N * D)
    assert_close(term.loss(), closed)
    log_lik, kl_u, log_prior, added = _elbo(torchgp, model, likelihood, Y, idx, combine_terms=False)
    assert_close(added, closed.expand(D))
    assert_close(with_kl, log_lik - kl_u + log_prior - added)


def test_kl_added_loss_gradient_matches_finite_differences():
    X = VariationalLatentVariable(4, 2, 2, torch.randn(4, 2, dtype=torch.float64), _prior(4, 2))

    def kl(q_mu, q_log_sigma):
        with torch.no_grad():
            X.q_mu.copy_(q_mu)
            X.q_log_sigma.copy_(q_log_sigma)
        q = torch.distributions.Normal(q_mu, torch.nn.functional.softplus(q_log_sigma))
        X.update_added_loss_term("x_kl", torchgp.mlls.KLGaussianAddedLossTerm(q, X.prior_x.distribution(), 4, 2))
        return X._added_loss_terms["x_kl"].loss()

    mu = torch.randn(4, 2, dtype=torch.float64, requires_grad=True)
    rho = torch.randn(4, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(kl, (mu, rho))
    X()  # the module's own term: gradient reaches both parameters
    X._added_loss_terms["x_kl"].loss().backward()
    assert X.q_mu.grad.abs().sum() > 0 and X.q_log_sigma.grad.abs().sum() > 0


def test_map_latent_adds_the_log_prior_per_datum():
    Y, idx = _targets(), torch.arange(6)
    point, lik_p = make_gplvm(torchgp, N, D, Q, M, "point")
    map_, lik_m = make_gplvm(torchgp, N, D, Q, M, "map")
    map_.load_state_dict(point.state_dict(), strict=False)
    X = point.X.X.detach()
    log_p = (-0.5 * X**2 - 0.5 * math.log(2 * math.pi)).sum()
    diff = _elbo(torchgp, map_, lik_m, Y, idx) - _elbo(torchgp, point, lik_p, Y, idx)
    assert_close(diff, (log_p / N).expand(D))


@pytest.mark.parametrize("latent", ["point", "map", "variational"])
def test_elbo_and_predictions_equal_gpytorchs(latent):
    gpytorch = pytest.importorskip("gpytorch")
    ours, lik_ours = make_gplvm(torchgp, N, D, Q, M, latent)
    ref, lik_ref = make_gplvm(gpytorch, N, D, Q, M, latent)
    assert set(ours.state_dict()) == set(ref.state_dict())
    torch.manual_seed(1)
    with torch.no_grad():
        for p in [*ref.parameters(), *lik_ref.parameters()]:
            p.add_(0.1 * torch.randn_like(p))
    ours.load_state_dict(ref.state_dict())
    lik_ours.load_state_dict(lik_ref.state_dict())
    Y, idx = _targets(), torch.tensor([0, 3, 5, 7, 9])
    # a variational X is sampled: the same seed gives the same reparameterised draw in both
    elbo_ours = _elbo(torchgp, ours, lik_ours, Y, idx)
    elbo_ref = _elbo(gpytorch, ref, lik_ref, Y, idx)
    assert_close(elbo_ours, elbo_ref.detach())
    elbo_ours.sum().backward()
    elbo_ref.sum().backward()
    latent_param = "q_mu" if latent == "variational" else "X"
    assert_close(getattr(ours.X, latent_param).grad, getattr(ref.X, latent_param).grad)
    ours.eval(), ref.eval()
    x_new = torch.randn(4, Q, dtype=torch.float64)
    with torch.no_grad():
        p_ours, p_ref = lik_ours(ours(x_new)), lik_ref(ref(x_new))
    assert_close(p_ours.mean, p_ref.mean)
    assert_close(p_ours.variance, p_ref.variance)


def _prior(n, q):
    zeros = torch.zeros(n, q, dtype=torch.float64)
    return torchgp.priors.NormalPrior(zeros, torch.ones_like(zeros))


def test_point_latent_keeps_a_parameter_and_copies_a_tensor():
    p = torch.nn.Parameter(torch.randn(5, 2))
    assert PointLatentVariable(5, 2, p).X is p
    t = torch.randn(5, 2)
    X = PointLatentVariable(5, 2, t)
    assert isinstance(X.X, torch.nn.Parameter) and torch.equal(X(), t) and X.X.data_ptr() != t.data_ptr()


def test_bad_inputs_raise_errors_naming_the_fix():
    with pytest.raises(ShapeError, match=r"\(n, latent_dim\)"):
        PointLatentVariable(5, 2, torch.randn(5, 3))
    with pytest.raises(InputError, match="latent_dim"):
        PointLatentVariable(5, 0, torch.randn(5, 0))
    with pytest.raises(ModelTypeError, match="prior_x"):
        MAPLatentVariable(5, 2, torch.randn(5, 2), prior_x=None)
    with pytest.raises(ModelTypeError, match="prior_x"):
        VariationalLatentVariable(5, 3, 2, torch.randn(5, 2), prior_x=torch.zeros(5, 2))
    with pytest.raises(InputError, match="data_dim"):
        VariationalLatentVariable(5, 0, 2, torch.randn(5, 2), _prior(5, 2))
    with pytest.raises(ModelTypeError, match="latent variable"):
        torchgp.models.gplvm.BayesianGPLVM(torch.randn(5, 2), None)
