"""GPyTorch-compatible names and shapes, batch shapes, KL registration, and errors that name the fix."""

from __future__ import annotations

import pytest
import torch

import torchgp
from tests._tol import tol
from torchgp.distributions import MultivariateNormal
from torchgp.errors import InputError, ModelTypeError, ShapeError
from torchgp.variational import (
    CholeskyVariationalDistribution,
    DeltaVariationalDistribution,
    MeanFieldVariationalDistribution,
    NaturalVariationalDistribution,
    TrilNaturalVariationalDistribution,
    UnwhitenedVariationalStrategy,
    VariationalStrategy,
)

from ._helpers import SVGP, toy_data


def test_state_dict_keys_match_gpytorch():
    model = SVGP(torch.rand(5, 2))
    keys = set(model.state_dict())
    assert {
        "variational_strategy.inducing_points",
        "variational_strategy._variational_distribution.variational_mean",
        "variational_strategy._variational_distribution.chol_variational_covar",
        "variational_strategy.variational_params_initialized",
    } <= keys
    fixed = SVGP(torch.rand(5, 2), learn_inducing_locations=False)
    assert "variational_strategy.inducing_points" in fixed.state_dict()
    assert "variational_strategy.inducing_points" not in dict(fixed.named_parameters())


@pytest.mark.parametrize(
    "dist_cls",
    [
        CholeskyVariationalDistribution,
        MeanFieldVariationalDistribution,
        DeltaVariationalDistribution,
        NaturalVariationalDistribution,
        TrilNaturalVariationalDistribution,
    ],
)
@pytest.mark.parametrize("strategy_cls", [VariationalStrategy, UnwhitenedVariationalStrategy])
def test_batch_equals_loop(dist_cls, strategy_cls):
    """A batch of 2 independent SVGPs equals the two run separately (predictions and KL)."""
    torch.manual_seed(0)
    Z = torch.rand(2, 6, 1, dtype=torch.float64)
    x = torch.rand(9, 1, dtype=torch.float64)
    batch = SVGP(Z, dist_cls, strategy_cls, batch_shape=torch.Size([2])).double()
    out = batch(x)
    kl = batch.variational_strategy.kl_divergence()
    assert out.mean.shape == (2, 9) and kl.shape == (2,)
    for i in range(2):
        single = SVGP(Z[i], dist_cls, strategy_cls).double()
        state = {k: (v[i] if v.dim() and v.shape[0] == 2 else v) for k, v in batch.state_dict().items()}
        single.load_state_dict(state)
        o = single(x)
        torch.testing.assert_close(o.mean, out.mean[i], **tol(torch.float64, 1e2))
        torch.testing.assert_close(o.variance, out.variance[i], **tol(torch.float64, 1e2))
        torch.testing.assert_close(single.variational_strategy.kl_divergence(), kl[i], **tol(torch.float64, 1e2))


def test_prior_call_and_full_covariance_consistent():
    model = SVGP(torch.rand(6, 1, dtype=torch.float64)).double()
    x = torch.rand(4, 1, dtype=torch.float64)
    prior = model(x, prior=True)
    torch.testing.assert_close(prior.covariance_matrix, model.covar_module(x).to_dense())
    q = model(x)
    torch.testing.assert_close(q.covariance_matrix.diagonal(), q.variance, **tol(torch.float64))
    assert model(torch.rand(4, dtype=torch.float64)).mean.shape == (4,)  # 1-D inputs are n points


def test_kl_registered_and_matches_strategy():
    torch.manual_seed(0)
    model = SVGP(torch.rand(5, 1, dtype=torch.float64), strategy_cls=UnwhitenedVariationalStrategy).double()
    with torch.no_grad():
        q = model.variational_strategy._variational_distribution
        q.variational_mean.normal_()
        q.chol_variational_covar.mul_(0.5)
    vs = model.variational_strategy
    vs(torch.rand(3, 1, dtype=torch.float64))
    kl = torch.distributions.kl_divergence(vs.variational_distribution, vs.prior_distribution)
    torch.testing.assert_close(kl, vs.kl_divergence(), **tol(torch.float64, 1e2))
    p = torch.distributions.MultivariateNormal(vs.prior_distribution.mean, vs.prior_distribution.covariance_matrix)
    qq = torch.distributions.MultivariateNormal(
        vs.variational_distribution.mean, vs.variational_distribution.covariance_matrix
    )
    torch.testing.assert_close(kl, torch.distributions.kl_divergence(qq, p), **tol(torch.float64, 1e2))


def test_errors_name_the_fix():
    X, y = toy_data(n=20, d=2)
    model = SVGP(X[:4].clone()).double()
    lik = torchgp.likelihoods.GaussianLikelihood().double()
    with pytest.raises(InputError, match="train_y.size"):
        torchgp.mlls.VariationalELBO(lik, model, num_data=0)
    mll = torchgp.mlls.VariationalELBO(lik, model, num_data=10)
    with pytest.raises(InputError, match="num_data"):
        mll(model(X), y)  # minibatch larger than num_data: the minibatch size was passed
    with pytest.raises(ShapeError, match=r"\(m, 3\)"):
        model(torch.rand(5, 3, dtype=torch.float64))
    with pytest.raises(ShapeError, match="num_inducing_points"):
        VariationalStrategy(model, torch.rand(7, 2), CholeskyVariationalDistribution(4))
    with pytest.raises(ModelTypeError, match="likelihood"):
        predictive = torchgp.likelihoods.BernoulliLikelihood()(model(X))  # not q(f)
        torchgp.mlls.VariationalELBO(lik, model, num_data=20)(predictive, y)
    with pytest.raises(InputError, match="SoftmaxLikelihood"):
        lik_b = torchgp.likelihoods.BernoulliLikelihood()
        torchgp.mlls.VariationalELBO(lik_b, model, num_data=20)(model(X), torch.arange(20.0))


def test_predictive_and_gamma_robust_objectives():
    X, y = toy_data(n=40)
    y = y.clone()
    y[::10] += 8.0  # outliers
    results = {}
    for name, cls, kw in [
        ("elbo", torchgp.mlls.VariationalELBO, {}),
        ("pll", torchgp.mlls.PredictiveLogLikelihood, {}),
        ("gamma", torchgp.mlls.GammaRobustVariationalELBO, {"gamma": 1.2}),
    ]:
        torch.manual_seed(0)
        model = SVGP(X[::4].clone()).double()
        lik = torchgp.likelihoods.GaussianLikelihood().double()
        mll = cls(lik, model, num_data=40, **kw)
        opt = torch.optim.Adam([*model.parameters(), *lik.parameters()], lr=0.05)
        for _ in range(150):
            opt.zero_grad()
            (-mll(model(X), y)).backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            results[name] = (model(X).mean - torch.sin(3 * X[:, 0])).abs().median().item()
    assert results["gamma"] < results["elbo"]  # robust to the outliers
    assert all(v < 1.0 for v in results.values()), results


def test_combine_terms_false_returns_parts():
    X, y = toy_data(n=10)
    model = SVGP(X[:3].clone()).double()
    lik = torchgp.likelihoods.GaussianLikelihood().double()
    mll = torchgp.mlls.VariationalELBO(lik, model, num_data=10, combine_terms=False)
    ll, kl, lp = mll(model(X), y)
    total = torchgp.mlls.VariationalELBO(lik, model, num_data=10)(model(X), y)
    torch.testing.assert_close(ll - kl + lp, total)
    assert kl.item() >= 0


def test_mvn_target_shape_error():
    model = SVGP(torch.rand(3, 1))
    lik = torchgp.likelihoods.GaussianLikelihood()
    with pytest.raises(ShapeError, match="minibatch targets"):
        torchgp.mlls.VariationalELBO(lik, model, num_data=100)(model(torch.rand(5, 1)), torch.rand(4))
    assert isinstance(model(torch.rand(5, 1)), MultivariateNormal)
