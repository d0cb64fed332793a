"""A NaN (or inf) target in a variational minibatch is named at once, not left to a later Cholesky failure."""

from __future__ import annotations

import pytest
import torch

import torchgp
from tests._tol import assert_close
from torchgp.errors import InputError
from torchgp.variational import CholeskyVariationalDistribution, VariationalStrategy


class SVGP(torchgp.models.ApproximateGP):
    def __init__(self, Z):
        super().__init__(VariationalStrategy(self, Z, CholeskyVariationalDistribution(Z.shape[-2])))
        self.mean_module = torchgp.means.ConstantMean()
        self.covar_module = torchgp.kernels.ScaleKernel(torchgp.kernels.RBFKernel())

    def forward(self, x):
        return torchgp.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))


def _setup(n=16, b=8):
    g = torch.Generator().manual_seed(3)
    X = torch.rand(n, 1, generator=g, dtype=torch.float64)
    y = torch.sin(6 * X).squeeze(-1)
    model = SVGP(X[:5].clone()).double()
    lik = torchgp.likelihoods.GaussianLikelihood().double()
    return model, lik, X[:b], y[:b].clone()


@pytest.mark.parametrize("mll_cls", [torchgp.mlls.VariationalELBO, torchgp.mlls.PredictiveLogLikelihood])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nonfinite_minibatch_targets_are_named(mll_cls, bad):
    model, lik, Xb, yb = _setup()
    mll = mll_cls(lik, model, num_data=16)
    yb[[2, 5]] = bad
    with pytest.raises(InputError) as err:
        mll(model(Xb), yb)
    msg = str(err.value)
    assert "2 row(s)" in msg and "[2, 5]" in msg  # the problem: which rows of the batch
    assert "Drop those rows" in msg and "observation_nan_policy('mask')" in msg  # the fixes
    # before the error, the parameters were left untouched: a clean batch trains as before
    finite = mll(model(Xb[[0, 1, 3]]), yb[[0, 1, 3]])
    assert torch.isfinite(finite)


def test_mask_policy_still_leaves_nan_targets_out():
    model, lik, Xb, yb = _setup()
    elbo = torchgp.mlls.VariationalELBO(lik, model, num_data=16, combine_terms=False)
    y_nan = yb.clone()
    y_nan[[1, 6]] = float("nan")
    keep = [0, 2, 3, 4, 5, 7]
    with torchgp.settings.observation_nan_policy("mask"):
        log_lik, kl, _ = elbo(model(Xb), y_nan)
    log_lik_sub, kl_sub, _ = elbo(model(Xb[keep]), yb[keep])
    # masked: the sum over the observed rows, divided by the whole batch size b (missing rows counted)
    assert_close(log_lik, log_lik_sub * len(keep) / len(yb))
    assert_close(kl, kl_sub)


def test_clean_minibatch_value_is_unchanged_by_the_check():
    model, lik, Xb, yb = _setup()
    elbo = torchgp.mlls.VariationalELBO(lik, model, num_data=16, combine_terms=False)
    log_lik, kl, _ = elbo(model(Xb), yb)
    # Hensman et al. (2013) eq. 4 by hand: Σ_i E_q[log N(y_i | f_i, σ²)] / b − KL / N
    q = model(Xb)
    s2 = lik.noise.squeeze()
    ell = -0.5 * torch.log(2 * torch.pi * s2) - ((yb - q.mean) ** 2 + q.variance) / (2 * s2)
    assert_close(log_lik, ell.sum() / len(yb))
    assert_close(kl, model.variational_strategy.kl_divergence() / 16)
