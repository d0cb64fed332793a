"""Edges a new user meets: NaN test rows, inputs far off the lengthscale's scale, training in eval mode.

Each warning must name the problem and the fix, and the numbers must be those computed without it.
"""

from __future__ import annotations

import re
import warnings

import pytest
import torch

import torchgp
from tests._tol import assert_close
from tests.models._gpytorch_ref import gpytorch_model
from tests.models._models import ExactModel, make_model
from torchgp.utils.warnings import GPInputWarning
from torchgp.variational import CholeskyVariationalDistribution, VariationalStrategy


class SVGP(torchgp.models.ApproximateGP):
    def __init__(self, Z, ard=None):
        super().__init__(VariationalStrategy(self, Z, CholeskyVariationalDistribution(Z.shape[-2])))
        self.mean_module = torchgp.means.ConstantMean()
        self.covar_module = torchgp.kernels.ScaleKernel(torchgp.kernels.RBFKernel(ard_num_dims=ard))

    def forward(self, x):
        return torchgp.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))


def _input_warnings(record) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, GPInputWarning)]


def _catch(fn):
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        out = fn()
    return out, _input_warnings(record)


# ---------------------------------------------------------------- NaN test rows
def _nan_rows(X, rows):
    Xb = X.clone()
    for r in rows:
        Xb[r, r % X.shape[-1]] = float("nan") if r % 2 else float("inf")
    return Xb


def test_exact_gp_warns_naming_nan_test_rows_and_keeps_the_others():
    model, _, _ = make_model(n=10, d=2)
    model.eval()
    Xs = torch.linspace(-1, 1, 14, dtype=torch.float64).reshape(7, 2)
    good, msgs = _catch(lambda: model(Xs))
    assert msgs == []
    bad, msgs = _catch(lambda: model(_nan_rows(Xs, [1, 4])))
    assert len(msgs) == 1
    assert "2 row(s)" in msgs[0] and "[1, 4]" in msgs[0] and "NaN" in msgs[0]
    assert "Drop or impute" in msgs[0]  # the fix
    keep = [0, 2, 3, 5, 6]
    assert_close(bad.mean[keep], good.mean[keep])
    assert_close(bad.variance[keep], good.variance[keep])
    assert torch.isnan(bad.mean[1]) and torch.isnan(bad.variance[1])  # row 1 holds a NaN (row 4 an inf)


def test_exact_gp_posterior_method_warns_too():
    model, _, _ = make_model(n=10, d=1)
    Xs = torch.linspace(-1, 1, 5, dtype=torch.float64).unsqueeze(-1)
    _, msgs = _catch(lambda: model.posterior(_nan_rows(Xs, [3])))
    assert len(msgs) == 1 and "[3]" in msgs[0]


def test_approximate_gp_warns_naming_nan_test_rows_and_keeps_the_others():
    g = torch.Generator().manual_seed(1)
    Z = torch.rand(6, 2, generator=g, dtype=torch.float64)
    model = SVGP(Z).double().eval()
    Xs = torch.rand(5, 2, generator=g, dtype=torch.float64)
    good, msgs = _catch(lambda: model(Xs))
    assert msgs == []
    bad, msgs = _catch(lambda: model(_nan_rows(Xs, [3])))
    assert len(msgs) == 1 and "1 row(s)" in msgs[0] and "[3]" in msgs[0]
    keep = [0, 1, 2, 4]
    assert_close(bad.mean[keep], good.mean[keep])
    assert_close(bad.variance[keep], good.variance[keep])


# ---------------------------------------------------------------- input scale
def _scaled_data(scale, n=20, d=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.rand(n, d, generator=g, dtype=torch.float64)
    y = torch.sin(6 * X).sum(-1)
    return X * scale, y


def _train(model, mll, X, y, steps):
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(steps):
        opt.zero_grad()
        loss = -mll(model(X), y)
        loss.backward()
        opt.step()


@pytest.mark.parametrize("scale", [1e6, 1e-6])
def test_exact_gp_warns_once_when_inputs_are_off_the_lengthscale_scale(scale):
    X, y = _scaled_data(scale)
    model = ExactModel(X, y, torchgp.likelihoods.GaussianLikelihood()).double()
    mll = torchgp.mlls.ExactMarginalLogLikelihood(model.likelihood, model)
    _, msgs = _catch(lambda: _train(model, mll, X, y, steps=10))
    assert len(msgs) == 1, msgs
    msg = msgs[0]
    assert "covar_module.base_kernel" in msg and "RBFKernel" in msg  # which kernel
    assert "Standardise" in msg and "ScaleToBounds" in msg  # the fixes
    found = re.search(r"model\.initialize\(\*\*\{'covar_module\.base_kernel\.lengthscale': ([^}]+)\}\)", msg)
    assert found is not None, msg  # the code line of the third fix
    init = found.group(1)
    spread = X.amax(0) - X.amin(0)
    assert float(spread.min()) / 4 <= float(init) * (1 + 1e-2) and float(init) <= float(spread.max()) / 4 * (1 + 1e-2)
    # the suggested line runs and silences the warning for a new model
    model2 = ExactModel(X, y, torchgp.likelihoods.GaussianLikelihood()).double()
    model2.initialize(**{"covar_module.base_kernel.lengthscale": float(init)})
    _, msgs = _catch(lambda: model2(X))
    assert msgs == []


def test_standardised_inputs_do_not_warn_and_the_prior_is_unchanged():
    X, y = _scaled_data(1e6)
    Xs = (X - X.mean(0)) / X.std(0)
    model = ExactModel(Xs, y, torchgp.likelihoods.GaussianLikelihood()).double()
    first, msgs = _catch(lambda: model(Xs))
    assert msgs == []
    second = model(Xs)  # no check the second time: the same prior
    assert_close(first.mean, second.mean)
    assert_close(first.covariance_matrix, second.covariance_matrix)


def test_scale_check_sees_what_the_kernel_sees():
    # ScaleToBounds in forward: the kernel sees inputs in [-1, 1] although train_x is ~1e6
    X, y = _scaled_data(1e6)

    class Scaled(ExactModel):
        def __init__(self, X, y, lik):
            super().__init__(X, y, lik)
            self.scale = torchgp.utils.grid.ScaleToBounds(-1.0, 1.0)

        def forward(self, x):
            return super().forward(self.scale(x))

    model = Scaled(X, y, torchgp.likelihoods.GaussianLikelihood()).double()
    _, msgs = _catch(lambda: model(X))
    assert msgs == []


def test_scale_check_follows_active_dims_and_new_training_data():
    X, y = _scaled_data(1.0, d=2)
    Xmix = X.clone()
    Xmix[:, 1] *= 1e6  # column 1 is off the scale, but the kernel only sees column 0
    kern = torchgp.kernels.ScaleKernel(torchgp.kernels.RBFKernel(active_dims=[0]))
    model = ExactModel(Xmix, y, torchgp.likelihoods.GaussianLikelihood(), kernel=kern).double()
    _, msgs = _catch(lambda: model(Xmix))
    assert msgs == []
    Xbad = X.clone()
    Xbad[:, 0] *= 1e6
    model.set_train_data(Xbad, y, strict=False)  # new data: checked again
    _, msgs = _catch(lambda: model(Xbad))
    assert len(msgs) == 1 and "covar_module.base_kernel" in msgs[0]


def test_approximate_gp_warns_once_on_off_scale_minibatches():
    X, y = _scaled_data(1e6, n=30)
    model = SVGP(X[:8].clone()).double()
    lik = torchgp.likelihoods.GaussianLikelihood().double()
    elbo = torchgp.mlls.VariationalELBO(lik, model, num_data=30)
    opt = torch.optim.Adam([*model.parameters(), *lik.parameters()], lr=0.01)

    def train():
        for i in range(10):
            idx = slice(3 * i, 3 * i + 3)
            opt.zero_grad()
            (-elbo(model(X[idx]), y[idx])).backward()
            opt.step()

    _, msgs = _catch(train)
    assert len(msgs) == 1 and "Standardise" in msgs[0] and "covar_module.base_kernel" in msgs[0]
    Xs = X / 1e6
    model = SVGP(Xs[:8].clone()).double()
    _, msgs = _catch(lambda: model(Xs[:5]))
    assert msgs == []


# ---------------------------------------------------------------- training in eval mode
def test_exact_mll_in_eval_mode_warns_naming_train_and_matches_gpytorch():
    model, X, y = make_model(n=10)
    mll = torchgp.mlls.ExactMarginalLogLikelihood(model.likelihood, model)
    model.eval()
    value, msgs = _catch(lambda: mll(model(X), y))
    assert len(msgs) == 2  # the model call (GPyTorch's warning) and the objective
    assert "Did you forget to call model.train()?" in msgs[0]
    assert "ExactMarginalLogLikelihood" in msgs[1] and "model.train()" in msgs[1] and "torch.no_grad()" in msgs[1]
    # the value is what GPyTorch computes in the same situation (the posterior's likelihood)
    import gpytorch

    ref = gpytorch_model(X, y)
    ref_mll = gpytorch.mlls.ExactMarginalLogLikelihood(ref.likelihood, ref)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        ref_value = ref_mll(ref(X), y)
    assert any("model.train()" in str(w.message) for w in record)  # GPyTorch warns too
    assert_close(value.detach(), ref_value.detach(), loose=100)


def test_exact_mll_no_warning_in_train_mode_and_none_from_the_objective_under_no_grad():
    model, X, y = make_model(n=10)
    mll = torchgp.mlls.ExactMarginalLogLikelihood(model.likelihood, model)
    _, msgs = _catch(lambda: mll(model(X), y))
    assert msgs == []
    model.eval()
    with torch.no_grad():
        _, msgs = _catch(lambda: mll(model(X), y))
    # scoring: only GPyTorch's model-call warning, not the objective's
    assert len(msgs) == 1 and "Did you forget to call model.train()?" in msgs[0]
    with torch.no_grad(), torchgp.settings.debug(False):
        _, msgs = _catch(lambda: mll(model(X), y))
    assert msgs == []


def test_leave_one_out_in_eval_mode_warns():
    model, X, y = make_model(n=10)
    loo = torchgp.mlls.LeaveOneOutPseudoLikelihood(model.likelihood, model)
    model.eval()
    with torchgp.settings.debug(False):
        _, msgs = _catch(lambda: loo(model(X), y))
    assert len(msgs) == 1 and "LeaveOneOutPseudoLikelihood" in msgs[0] and "model.train()" in msgs[0]


def test_elbo_in_eval_mode_with_gradients_warns_and_scoring_does_not():
    g = torch.Generator().manual_seed(2)
    X = torch.rand(12, 1, generator=g, dtype=torch.float64)
    y = torch.sin(6 * X).squeeze(-1)
    model = SVGP(X[:5].clone()).double()
    lik = torchgp.likelihoods.GaussianLikelihood().double()
    elbo = torchgp.mlls.VariationalELBO(lik, model, num_data=12)
    train_value, msgs = _catch(lambda: elbo(model(X), y))
    assert msgs == []
    model.eval()
    lik.eval()
    value, msgs = _catch(lambda: elbo(model(X), y))
    assert len(msgs) == 1 and "VariationalELBO" in msgs[0] and "model.train()" in msgs[0]
    assert_close(value.detach(), train_value.detach())  # same numbers: only the warning is new
    with torch.no_grad():
        _, msgs = _catch(lambda: elbo(model(X), y))
    assert msgs == []
