"""The one solver choice routes ``K_1 ⊗ K_2 + D`` to the closed-form Kronecker solve: finite gradients equal to the
dense ``nt × nt`` ones even when a factor has repeated eigenvalues."""

from __future__ import annotations

import pytest
import torch

import torchgp
from tests._tol import assert_close
from tests.multitask._models import D, icm_model, toy_data
from torchgp.distributions.multitask_multivariate_normal import flatten_tasks
from torchgp.linalg import inv_quad_logdet
from torchgp.linalg.kronecker_solve import KroneckerSum, kronecker_solve
from torchgp.linalg.operators import DenseOperator, KroneckerProductAddedDiag, KroneckerProductOperator
from torchgp.linalg.solvers import choose_solver, factorize


def _repeated_task_model(X, Y, noise_kwargs):
    """ICM with ``K_task = c I`` (zero covar_factor, equal variances): every task eigenvalue repeated."""
    model = icm_model(torchgp, X, Y, rank=1, **noise_kwargs)
    task = model.covar_module.task_covar_module
    with torch.no_grad():
        task.covar_factor.zero_()
        task.raw_var.fill_(0.3)
        model.covar_module.data_covar_module.lengthscale = 0.4
    return model


def _structured_and_dense(model, X, Y):
    """``(rᵀA⁻¹r + log|A|)`` by the solver ``choose_solver`` picks, and by a dense Cholesky of the same ``A``."""
    model.train()
    marg = model.likelihood(model(X))
    op = marg.lazy_covariance_matrix
    r = flatten_tasks(Y - marg.mean, True)
    quad, ld = inv_quad_logdet(op, r)
    dense = model.likelihood(model(X))
    A = dense.lazy_covariance_matrix.to_dense()
    L = torch.linalg.cholesky(A)
    rd = flatten_tasks(Y - dense.mean, True).unsqueeze(-1)
    dq = (rd * torch.cholesky_solve(rd, L)).sum()
    return op, quad + ld, dq + 2 * L.diagonal().log().sum()


NOISES = {"global": dict(lik_rank=0, has_task_noise=False), "per_task": dict(lik_rank=0), "rank_1": dict(lik_rank=1)}


@pytest.mark.parametrize("noise", list(NOISES))
@pytest.mark.parametrize("repeated", ["task", "inputs"])
def test_gradients_are_finite_and_dense_with_repeated_eigenvalues(noise, repeated):
    X, Y = toy_data(n=8, t=3)
    if repeated == "inputs":  # duplicated inputs: K_x has repeated (zero) eigenvalues
        X, Y = torch.cat([X, X[:4]]), torch.cat([Y, Y[:4] + 0.05])
        model = icm_model(torchgp, X, Y, rank=1, **NOISES[noise])
    else:
        model = _repeated_task_model(X, Y, NOISES[noise])
    op, value, dense_value = _structured_and_dense(model, X, Y)
    assert choose_solver(op) == "kronecker"
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(value, params, allow_unused=True)
    dense_grads = torch.autograd.grad(dense_value, params, allow_unused=True)
    assert_close(value, dense_value)
    for g, dg in zip(grads, dense_grads):
        if dg is None:
            continue
        assert torch.isfinite(g).all()
        assert_close(g, dg)


def test_the_exact_mll_of_a_repeated_task_model_equals_the_dense_mll():
    X, Y = toy_data(n=8, t=3)
    model = _repeated_task_model(X, Y, NOISES["per_task"])
    model.train()
    mll = torchgp.mlls.ExactMarginalLogLikelihood(model.likelihood, model)
    value = mll(model(X), Y)
    marg = model.likelihood(model(X))
    dense = (
        torch.distributions.MultivariateNormal(
            flatten_tasks(marg.mean, True), marg.lazy_covariance_matrix.to_dense()
        ).log_prob(flatten_tasks(Y, True))
        / Y.numel()
    )
    params = list(model.parameters())
    for g, dg in zip(torch.autograd.grad(value, params), torch.autograd.grad(dense, params)):
        assert torch.isfinite(g).all()
        assert_close(g, dg)
    assert_close(value, dense)


def _spd(n, seed, rank=None):
    g = torch.Generator().manual_seed(seed)
    R = torch.randn(n, n if rank is None else rank, generator=g, dtype=D)
    return R @ R.mT + (0.1 if rank is None else 0.0) * torch.eye(n, dtype=D)


@pytest.mark.parametrize("diag_noise", [True, False])
def test_kronecker_solve_gradcheck(diag_noise):
    p, q = 4, 3
    g = torch.Generator().manual_seed(0)
    A, C = torch.randn(p, p, generator=g, dtype=D), torch.randn(q, 2, generator=g, dtype=D)
    s2 = (torch.rand(q, generator=g, dtype=D) + 0.2) if diag_noise else torch.randn(q, q, generator=g, dtype=D)
    rhs = torch.randn(p * q, 2, generator=g, dtype=D)

    def solve(A, C, s2, rhs):  # symmetric parametrisations: the solve reads K_i and S_i as symmetric matrices
        K1 = A @ A.mT + 0.5 * torch.eye(p, dtype=D)
        K2 = C @ C.mT  # rank 2 < q: a repeated zero eigenvalue
        S2 = s2 if diag_noise else s2 @ s2.mT + 0.3 * torch.eye(q, dtype=D)
        return kronecker_solve(KroneckerSum(K1, K2, None, S2, True, diag_noise), rhs)

    leaves = [x.clone().requires_grad_(True) for x in (A, C, s2, rhs)]
    assert torch.autograd.gradcheck(solve, leaves)


def test_factor_solve_and_logdet_of_three_factors_equal_dense():
    K = [_spd(2, 1), _spd(3, 2, rank=1), _spd(2, 3)]
    d = [torch.tensor([0.3, 0.6], dtype=D), None, torch.tensor([1.0, 2.0], dtype=D)]
    leaves = [k.clone().requires_grad_(True) for k in K]
    op = KroneckerProductAddedDiag(KroneckerProductOperator(*(DenseOperator(k) for k in leaves)), diag_factors=d)
    assert choose_solver(op) == "kronecker"
    rhs = torch.randn(12, 2, generator=torch.Generator().manual_seed(4), dtype=D)
    f = factorize(op)
    x = f.solve(rhs)
    quad, ld = f.inv_quad_logdet(rhs)
    grads = torch.autograd.grad(x.sum() + quad + ld, leaves)
    dense_leaves = [k.clone().requires_grad_(True) for k in K]
    A = torch.kron(torch.kron(dense_leaves[0], dense_leaves[1]), dense_leaves[2])
    A = A + torch.diag(torch.kron(torch.kron(d[0], torch.ones(3, dtype=D)), d[2]))
    xd = torch.linalg.solve(A, rhs)
    dense_grads = torch.autograd.grad(xd.sum() + (rhs * xd).sum() + torch.logdet(A), dense_leaves)
    assert_close(x, xd)
    assert_close(ld, torch.logdet(A))
    for a, b in zip(grads, dense_grads):
        assert_close(a, b)
