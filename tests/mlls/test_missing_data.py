"""NaN targets under settings.observation_nan_policy: the exact MLL and posterior of the observed subset."""

from __future__ import annotations

import gpytorch
import pytest
import torch

import torchgp
from tests._tol import assert_close
from tests.models._models import ExactModel, data
from torchgp.utils.warnings import GPInputWarning

_HYPERS = {"likelihood.noise": 0.07, "covar_module.base_kernel.lengthscale": 0.6, "covar_module.outputscale": 1.4}


def _model(X, y, batch_shape=torch.Size()):
    lik = torchgp.likelihoods.GaussianLikelihood(batch_shape=batch_shape)
    model = ExactModel(X, y, lik, batch_shape=batch_shape).double()
    return model.initialize(**_HYPERS, **{"mean_module.constant": 0.3})


def _mll_times_n(model, X, y):
    mll = torchgp.mlls.ExactMarginalLogLikelihood(model.likelihood, model)
    return mll(model(X), y) * X.shape[-2]


@pytest.mark.parametrize("policy", ["mask", "fill"])
def test_mll_and_gradient_equal_those_of_the_observed_subset(policy):
    X, y = data(n=11)
    missing = torch.tensor([1, 4, 5, 9])
    keep = torch.tensor([i for i in range(11) if i not in missing.tolist()])
    y_nan = y.clone()
    y_nan[missing] = float("nan")
    with torchgp.settings.observation_nan_policy(policy):
        full = _model(X, y_nan)
        value = _mll_times_n(full, X, y_nan)
        value.backward()
    sub = _model(X[keep], y[keep])
    ref = _mll_times_n(sub, X[keep], y[keep])
    ref.backward()
    torch.testing.assert_close(value, ref, rtol=1e-10, atol=1e-10)
    for (name, p), q in zip(full.named_parameters(), sub.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-10, atol=1e-10, msg=name)


def test_batched_members_with_different_masks():
    X, y = data(n=9, batch=(3,))
    masks = [[0, 3], [], [2, 5, 8]]
    y_nan = y.clone()
    for b, rows in enumerate(masks):
        y_nan[b, rows] = float("nan")
    with torchgp.settings.observation_nan_policy("mask"):
        model = _model(X, y_nan, torch.Size([3]))
        value = _mll_times_n(model, X, y_nan)
        value.sum().backward()
    raw_ls = model.covar_module.base_kernel.raw_lengthscale.grad
    for b, rows in enumerate(masks):
        keep = [i for i in range(9) if i not in rows]
        sub = _model(X[b, keep], y[b, keep])
        ref = _mll_times_n(sub, X[b, keep], y[b, keep])
        ref.backward()
        torch.testing.assert_close(value[b], ref, rtol=1e-10, atol=1e-10)
        grad = sub.covar_module.base_kernel.raw_lengthscale.grad
        torch.testing.assert_close(raw_ls[b], grad.reshape(raw_ls[b].shape), rtol=1e-10, atol=1e-10)


def test_mll_matches_gpytorch_mask():
    X, y = data(n=10)
    y[[2, 6]] = float("nan")
    with torchgp.settings.observation_nan_policy("mask"):
        ours = _model(X, y)
        value = torchgp.mlls.ExactMarginalLogLikelihood(ours.likelihood, ours)(ours(X), y)

    class G(gpytorch.models.ExactGP):
        def __init__(self):
            super().__init__(X, y, gpytorch.likelihoods.GaussianLikelihood())
            self.mean_module = gpytorch.means.ConstantMean()
            self.covar_module = gpytorch.kernels.ScaleKernel(gpytorch.kernels.RBFKernel())

        def forward(self, x):
            return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))

    g = G().double()
    g.initialize(**{k: torch.tensor(v, dtype=torch.float64) for k, v in _HYPERS.items()})
    g.mean_module.constant.data.fill_(0.3)
    with gpytorch.settings.observation_nan_policy("mask"):
        ref = gpytorch.mlls.ExactMarginalLogLikelihood(g.likelihood, g)(g(X), y)
    assert_close(value, ref)


@pytest.mark.parametrize("policy", ["mask", "fill"])
def test_posterior_equals_that_of_the_observed_subset(policy):
    X, y = data(n=10)
    Xs = torch.linspace(-2, 2, 7, dtype=torch.float64).unsqueeze(-1)
    y_nan = y.clone()
    y_nan[[0, 7]] = float("nan")
    keep = [i for i in range(10) if i not in (0, 7)]
    with torchgp.settings.observation_nan_policy(policy):
        model = _model(X, y_nan).eval()
        pred = model(Xs)
        mean, cov = pred.mean, pred.covariance_matrix
    sub = _model(X[keep], y[keep]).eval()
    ref = sub(Xs)
    assert_close(mean, ref.mean)
    assert_close(cov, ref.covariance_matrix)
    assert_close(pred.variance, ref.variance)


def test_default_policy_refuses_nan_targets_naming_the_policy():
    X, y = data(n=6)
    y[3] = float("nan")
    with pytest.warns(GPInputWarning, match=r"\[3\].*observation_nan_policy"):  # GPyTorch accepts them here
        _model(X, y)
    with torchgp.settings.observation_nan_policy("mask"):
        model = _model(X, y)
    mll = torchgp.mlls.ExactMarginalLogLikelihood(model.likelihood, model)
    with pytest.raises(torchgp.errors.NonFiniteError, match=r"\[3\].*observation_nan_policy"):
        mll(model(X), y)
    with pytest.raises(torchgp.errors.InputError, match="observation_nan_policy"):
        model.eval()(X)
    with pytest.raises(torchgp.errors.InputError, match="inf"), torchgp.settings.observation_nan_policy("mask"):
        y[2] = float("inf")
        _model(X, y)


def test_policy_setting_values():
    assert torchgp.settings.observation_nan_policy.value() == "ignore"
    with torchgp.settings.observation_nan_policy("fill"):
        assert torchgp.settings.observation_nan_policy.value() == "fill"
    with pytest.raises(ValueError, match="'ignore', 'mask' or 'fill'"):
        torchgp.settings.observation_nan_policy("drop")


def test_posterior_on_the_iterative_path_masks_too():
    X, y = data(n=10)
    Xs = torch.linspace(-2, 2, 5, dtype=torch.float64).unsqueeze(-1)
    y_nan = y.clone()
    y_nan[[3, 4]] = float("nan")
    keep = [i for i in range(10) if i not in (3, 4)]
    with torchgp.settings.observation_nan_policy("mask"):
        model = _model(X, y_nan).eval()
        with torchgp.settings.max_cholesky_size(2), torchgp.settings.eval_cg_tolerance(1e-10):
            mean = model(Xs).mean
    ref = _model(X[keep], y[keep]).eval()(Xs).mean
    torch.testing.assert_close(mean, ref, rtol=1e-6, atol=1e-6)


class _SVGP(torchgp.models.ApproximateGP):
    def __init__(self, Z):
        q = torchgp.variational.CholeskyVariationalDistribution(Z.shape[0])
        super().__init__(torchgp.variational.VariationalStrategy(self, Z, q, learn_inducing_locations=False))
        self.mean_module = torchgp.means.ZeroMean()
        self.covar_module = torchgp.kernels.RBFKernel()

    def forward(self, x):
        return torchgp.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))


@pytest.mark.parametrize(
    "cls", [torchgp.mlls.VariationalELBO, torchgp.mlls.PredictiveLogLikelihood, torchgp.mlls.GammaRobustVariationalELBO]
)
def test_variational_objectives_sum_over_the_observed_points(cls):
    X, y = data(n=10)
    model = _SVGP(X[::3].clone()).double()
    lik = torchgp.likelihoods.GaussianLikelihood().double()
    y_nan = y.clone()
    y_nan[[1, 6]] = float("nan")
    keep = [i for i in range(10) if i not in (1, 6)]
    mll = cls(lik, model, num_data=10)
    with torchgp.settings.observation_nan_policy("mask"):
        value = mll(model(X), y_nan)
    log_lik, kl, log_prior = mll.__class__(lik, model, num_data=10, combine_terms=False)(model(X[keep]), y[keep])
    assert_close(value, log_lik * 8 / 10 - kl + log_prior)  # the likelihood term still divides by b = 10
    value.backward()
    assert torch.isfinite(model.variational_strategy._variational_distribution.chol_variational_covar.grad).all()
