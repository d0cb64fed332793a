"""LargeBatchVariationalStrategy: equals VariationalStrategy to round-off, and GPyTorch 1.15.2's numbers."""

from __future__ import annotations

import gpytorch
import pytest
import torch

import torchgp
from tests._tol import assert_close
from torchgp.variational import LargeBatchVariationalStrategy, VariationalStrategy

from ._helpers import HYPERS, SVGP, toy_data
from ._models import GPySVGP, set_q

D = torch.float64


def _pair(Z, batch_shape=torch.Size([])):
    ref = set_q(SVGP(Z, strategy_cls=VariationalStrategy, batch_shape=batch_shape).double())
    ref.initialize(**HYPERS)
    lb = SVGP(Z, strategy_cls=LargeBatchVariationalStrategy, batch_shape=batch_shape).double()
    lb.load_state_dict(ref.state_dict())
    return ref, lb


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_equals_variational_strategy(train):
    X, y = toy_data(n=40)
    ref, lb = _pair(X[:8].clone())
    ref.train(train), lb.train(train)
    a, b = ref(X), lb(X)
    assert_close(b.mean, a.mean, loose=0.01)
    assert_close(b.variance, a.variance, loose=0.01)
    assert_close(b.covariance_matrix, a.covariance_matrix, loose=0.01)
    lik = torchgp.likelihoods.GaussianLikelihood().double()
    with torch.no_grad():  # in eval mode the ELBO is only a score
        e_ref = torchgp.mlls.VariationalELBO(lik, ref, num_data=40)(ref(X), y)
        e_lb = torchgp.mlls.VariationalELBO(lik, lb, num_data=40)(lb(X), y)
    assert abs(e_ref.item() - e_lb.item()) < 1e-10


def test_gradients_equal_variational_strategy():
    X, y = toy_data(n=30)
    ref, lb = _pair(X[:6].clone())
    lik = torchgp.likelihoods.GaussianLikelihood().double()
    grads = []
    for model in (ref, lb):
        loss = -torchgp.mlls.VariationalELBO(lik, model, num_data=30)(model(X), y)
        params = [p for _, p in sorted(model.named_parameters())]
        grads.append(torch.autograd.grad(loss, params))
    for g_ref, g_lb in zip(*grads):
        assert_close(g_lb, g_ref, loose=0.01)


def test_batched_hyperparameters():
    X, _ = toy_data(n=20)
    ref, lb = _pair(X[:5].clone(), batch_shape=torch.Size([2]))
    a, b = ref(X), lb(X)
    assert b.mean.shape == (2, 20)
    assert_close(b.mean, a.mean, loose=0.01)
    assert_close(b.variance, a.variance, loose=0.01)


def test_quad_form_diagonal_gradcheck():
    from torchgp.variational.large_batch_variational_strategy import QuadFormDiagonal

    g = torch.Generator().manual_seed(0)
    A = torch.randn(4, 4, generator=g, dtype=D)
    M = (A + A.mT).requires_grad_(True)
    R = torch.randn(4, 7, generator=g, dtype=D, requires_grad=True)
    assert torch.autograd.gradcheck(lambda M, R: QuadFormDiagonal.apply((M + M.mT) / 2, R), (M, R))
    assert_close(QuadFormDiagonal.apply(M, R), torch.diagonal(R.mT @ M @ R))


def test_float32_model_computes_the_middle_term_in_float64():
    X, _ = toy_data(n=20, dtype=torch.float32)
    lb = SVGP(X[:5].clone(), strategy_cls=LargeBatchVariationalStrategy)
    out = lb(X)
    assert out.mean.dtype == torch.float32 and out.variance.dtype == torch.float32
    assert torch.isfinite(out.variance).all()


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_matches_gpytorch(train):
    X, y = toy_data(n=30)
    _, lb = _pair(X[:7].clone())
    theirs = GPySVGP(X[:7].clone(), gpytorch.variational.LargeBatchVariationalStrategy).double()
    theirs.load_state_dict(lb.state_dict())
    lb.train(train), theirs.train(train)
    mine, gp = lb(X), theirs(X)
    assert_close(mine.mean, gp.mean.detach(), loose=100)
    assert_close(mine.variance, gp.variance.detach(), loose=100)
    if not train:
        assert_close(mine.covariance_matrix, gp.covariance_matrix.detach(), loose=100)
    lik_m = torchgp.likelihoods.GaussianLikelihood().double()
    lik_t = gpytorch.likelihoods.GaussianLikelihood().double()
    lb.train(), theirs.train()
    e_m = torchgp.mlls.VariationalELBO(lik_m, lb, num_data=30)(lb(X), y)
    e_t = gpytorch.mlls.VariationalELBO(lik_t, theirs, num_data=30)(theirs(X), y)
    assert abs(e_m.item() - e_t.item()) < 1e-8 * abs(e_t.item()) + 1e-8
