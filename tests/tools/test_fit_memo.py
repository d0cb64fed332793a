"""The per-run memo of ``fit`` (``torchgp.module.fit_scope``): structure-only checks once per run, never stale."""

from __future__ import annotations

import contextlib

import pytest
import torch

import torchgp
from tests._tol import assert_close
from torchgp.errors import ShapeError
from torchgp.module import fit_memo, fit_scope
from torchgp.optim import fit as fit_module


class _GP(torchgp.models.ExactGP):
    def __init__(self, X, y, lik):
        super().__init__(X, y, lik)
        self.mean_module = torchgp.means.ConstantMean()
        self.covar_module = torchgp.kernels.ScaleKernel(torchgp.kernels.MaternKernel(nu=2.5, ard_num_dims=2))

    def forward(self, x):
        return torchgp.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))


def _mll(n=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.rand(n, 2, generator=g, dtype=torch.float64)
    y = torch.sin(4 * X[:, 0]) + 0.1 * torch.randn(n, generator=g, dtype=torch.float64)
    lik = torchgp.likelihoods.GaussianLikelihood()
    return torchgp.mlls.ExactMarginalLogLikelihood(lik, _GP(X, y, lik).double())


def _loss(mll):
    m = mll.model
    return -mll(m(*m.train_inputs), m.train_targets)


def test_memo_exists_only_inside_the_scope():
    assert fit_memo() is None
    with fit_scope() as memo:
        assert fit_memo() is memo
        with fit_scope() as inner:
            assert fit_memo() is inner and inner is not memo
        assert fit_memo() is memo
    assert fit_memo() is None


def test_fit_still_refuses_targets_of_the_wrong_shape_at_its_start():
    mll = _mll()
    mll.model.train_targets = torch.zeros(5, dtype=torch.float64)  # bypasses set_train_data's check
    with pytest.raises(ShapeError, match="train_targets must have shape"):
        torchgp.fit(mll, progress=False, max_jitter_retries=0)


def test_replaced_targets_are_checked_again_within_a_run():
    mll = _mll()
    mll.train()
    with fit_scope():
        _loss(mll)  # checked and memoised
        mll.model.train_targets = torch.zeros(5, dtype=torch.float64)
        with pytest.raises(ShapeError, match="train_targets must have shape"):
            _loss(mll)


def test_values_set_train_data_parameters_and_priors_are_read_afresh_within_a_run():
    mll = _mll()
    mll.train()
    m = mll.model
    with fit_scope():
        _loss(mll)
        m.set_train_data(targets=torch.cos(3 * m.train_inputs[0][:, 1]), strict=False)
        m.covar_module.base_kernel.lengthscale = torch.tensor([[0.3, 0.7]], dtype=torch.float64)
        inside = _loss(mll)
    assert_close(inside, _loss(mll))
    # a prior registered between two runs is seen by the second: each run has its own memo
    with fit_scope():
        before = _loss(mll)
    m.covar_module.register_prior("outputscale_prior", torchgp.priors.GammaPrior(2.0, 0.5), lambda mod: mod.outputscale)
    with fit_scope():
        after = _loss(mll)
    assert_close(after, _loss(mll))
    expected_shift = -torchgp.priors.GammaPrior(2.0, 0.5).log_prob(m.covar_module.outputscale).sum() / 12
    assert_close(after - before, expected_shift.to(after))


def test_fit_with_the_memo_equals_fit_without_it(monkeypatch):
    a, b = _mll(seed=3), _mll(seed=3)
    ra = torchgp.fit(a, progress=False)
    monkeypatch.setattr(fit_module, "fit_scope", contextlib.nullcontext)  # every evaluation checks everything
    rb = torchgp.fit(b, progress=False)
    assert ra.function_evals == rb.function_evals
    assert ra.loss == rb.loss
    for (name, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(pa, pb), name
