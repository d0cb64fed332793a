"""``fit(standardize_inputs=True)``: default lengthscales off the inputs' scale are fitted in standardised units."""

from __future__ import annotations

import functools
import warnings

import pytest
import torch

import torchgp
from torchgp.optim._scale import standardize_lengthscales

N, D3 = 40, 3


class _GP(torchgp.models.ExactGP):
    def __init__(self, X, y, kernel):
        super().__init__(X, y, torchgp.likelihoods.GaussianLikelihood())
        self.mean_module = torchgp.means.ConstantMean()
        self.covar_module = torchgp.kernels.ScaleKernel(kernel)

    def forward(self, x):
        return torchgp.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))


def _data(d: int, n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    X = torch.rand(n, d, generator=g, dtype=torch.float64)
    f = torch.sin(5 * X[:, 0]) + X[:, 1:].sum(-1)
    return X, f


def _fit(X, y, kernel=None, **kw):
    kernel = torchgp.kernels.RBFKernel(ard_num_dims=X.shape[-1]) if kernel is None else kernel
    model = _GP(X, y, kernel).double()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = torchgp.fit(torchgp.mlls.ExactMarginalLogLikelihood(model.likelihood, model), progress=False, **kw)
    return model, result, [str(w.message) for w in caught]


def _r2(model, X, f) -> float:
    model.eval()
    with torch.no_grad():
        mean = model.likelihood(model(X)).mean
    return float(1 - ((mean - f) ** 2).mean() / f.var())


@functools.cache
def _problem(d: int):
    """Training and test data, and the fit on standardised training inputs (its R² and lengthscale)."""
    X, f = _data(d, N, 0)
    y = f + 0.05 * torch.randn(N, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    Xt, ft = _data(d, 50, 2)
    mu, sd = X.mean(0), X.std(0)
    model, result, _ = _fit((X - mu) / sd, y)
    assert not any(w.startswith("standardize_inputs") for w in result.warnings)  # ratio ~1: nothing to do
    ls = model.covar_module.base_kernel.lengthscale.detach().flatten()
    return X, y, Xt, ft, _r2(model, (Xt - mu) / sd, ft), ls, sd


@pytest.mark.parametrize("d", [1, D3])
@pytest.mark.parametrize("scale", [1e6, 1e-6])
def test_fit_on_far_scales_matches_the_standardised_fit(scale, d):
    X, y, Xt, ft, r2_std, ls_std, sd = _problem(d)
    model, result, caught = _fit(X * scale, y)
    assert _r2(model, Xt * scale, ft) == pytest.approx(r2_std, abs=0.02)
    ls = model.covar_module.base_kernel.lengthscale.detach().flatten()
    torch.testing.assert_close(ls, ls_std * sd * scale, rtol=0.03, atol=0.0)
    notes = [w for w in result.warnings if w.startswith("standardize_inputs")]
    assert len(notes) == 1 and "covar_module.base_kernel" in notes[0]
    assert not any("far from the kernel's lengthscale" in w for w in caught)  # the model's check stays quiet
    assert isinstance(model.covar_module.base_kernel.raw_lengthscale_constraint, torchgp.constraints.Positive)
    if scale == 1e6 and d == D3:
        plain, plain_result, plain_caught = _fit(X * scale, y, standardize_inputs=False)
        assert _r2(plain, Xt * scale, ft) < r2_std - 0.5  # as given, the default model fits (nearly) nothing
        assert any("far from the kernel's lengthscale" in w for w in plain_caught)
        assert not any(w.startswith("standardize_inputs") for w in plain_result.warnings)


def test_a_user_set_lengthscale_and_a_period_are_left_alone():
    X, y, *_ = _problem(1)
    kernel = torchgp.kernels.RBFKernel()
    kernel.lengthscale = 5.0
    _, result, caught = _fit(X * 1e6, y, kernel, maxiter=2)
    assert not any(w.startswith("standardize_inputs") for w in result.warnings)
    assert any("far from the kernel's lengthscale" in w for w in caught)
    periodic = torchgp.kernels.PeriodicKernel()
    before = periodic.period_length.detach().clone()
    model = _GP(X * 1e6, y, periodic).double()
    assert standardize_lengthscales(model, model.train_inputs).entries == []
    torch.testing.assert_close(model.covar_module.base_kernel.period_length.detach(), before.double())


def test_rescaling_is_per_column_per_batch_member_and_undo_keeps_the_value():
    X, y, *_ = _problem(D3)
    Xb = torch.stack([X * 1e6, X]).clone()
    Xb[0, :, 2] = X[:, 2]  # member 0: columns 0 and 1 far off, column 2 on scale; member 1: all on scale
    kernel = torchgp.kernels.RBFKernel(ard_num_dims=D3, batch_shape=torch.Size([2]))
    model = _GP(Xb, y.expand(2, N), kernel).double()
    rescaling = standardize_lengthscales(model, model.train_inputs)
    [(k, _, scale, _)] = rescaling.entries
    expected = torch.ones(2, 1, D3, dtype=torch.float64)
    expected[0, 0, :2] = Xb[0, :, :2].std(0)
    torch.testing.assert_close(scale, expected)
    default = torchgp.kernels.RBFKernel().lengthscale.item()
    torch.testing.assert_close(k.lengthscale.detach(), default * expected)
    with torch.no_grad():
        k.raw_lengthscale.add_(0.3)  # an optimiser step in standardised units
    value = k.lengthscale.detach().clone()
    rescaling.undo()
    torch.testing.assert_close(k.lengthscale.detach(), value)
    assert isinstance(k.raw_lengthscale_constraint, torchgp.constraints.Positive)
