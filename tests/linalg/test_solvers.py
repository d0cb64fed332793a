"""The one solver choice: which kind each operator gets, structure kept on the way to a solve, gradients."""

from __future__ import annotations

import pytest
import torch

from tests._tol import assert_close
from tests.linalg._operator_cases import spd
from torchgp import settings
from torchgp.distributions import MultivariateNormal
from torchgp.linalg import inv_quad_logdet
from torchgp.linalg.operators import (
    AddedDiagOperator,
    BlockDiagOperator,
    ConstantDiagOperator,
    DenseOperator,
    DiagOperator,
    KernelOperator,
    KroneckerProductAddedDiag,
    KroneckerProductOperator,
    LowRankRootAddedDiag,
    LowRankRootOperator,
    Operator,
)
from torchgp.linalg.solvers import choose_solver, factorize

DT = torch.float64


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=DT)


def test_each_operator_gets_its_solver():
    A = spd(_randn(5, 5))
    R = _randn(5, 2)
    d = torch.full((5,), 0.5, dtype=DT)
    K = KroneckerProductOperator(spd(_randn(2, 2)), spd(_randn(3, 3, seed=1)))
    assert choose_solver(A) == "cholesky"
    assert choose_solver(DiagOperator(d)) == "cholesky"
    assert choose_solver(LowRankRootOperator(R) + DiagOperator(d)) == "woodbury"
    assert choose_solver(LowRankRootOperator(_randn(5, 6)).add_diagonal(d)) == "cholesky"  # rank ≥ n: no gain
    assert choose_solver(K) == "kronecker"
    assert choose_solver(K.add_jitter(0.1)) == "kronecker"
    assert choose_solver(K.add_diagonal(_randn(6).square())) == "cholesky"  # a general diagonal has no structure
    assert choose_solver(BlockDiagOperator(spd(_randn(3, 2, 2)))) == "cholesky"
    with settings.max_cholesky_size(4):
        assert choose_solver(A) == "iterative"
        assert choose_solver(LowRankRootOperator(R).add_diagonal(d)) == "woodbury"  # structure beats size
        assert choose_solver(K.add_jitter(0.1)) == "kronecker"


def test_cholesky_factor_exposes_its_lower_factor():
    A = spd(_randn(2, 5, 5))
    f = factorize(A)
    assert f.kind == "cholesky"
    L = f.cholesky
    assert torch.equal(L, L.tril())
    assert_close(L @ L.mT, A)
    assert factorize(LowRankRootOperator(_randn(5, 2)).add_jitter(1.0)).cholesky is None


def test_structure_preserving_sums_and_products():
    d = _randn(2, 4).square() + 0.1
    R = _randn(2, 4, 2)
    K = KroneckerProductOperator(spd(_randn(2, 2)), spd(_randn(2, 2, seed=1)))
    assert isinstance(DiagOperator(d) + DiagOperator(d), DiagOperator)
    assert isinstance(DiagOperator(d) * DenseOperator(spd(_randn(2, 4, 4))), DiagOperator)
    assert isinstance(LowRankRootOperator(R) + DiagOperator(d), LowRankRootAddedDiag)
    assert isinstance(LowRankRootOperator(R).add_jitter().add_jitter(), LowRankRootAddedDiag)
    assert isinstance(DiagOperator(d) + LowRankRootOperator(R), LowRankRootAddedDiag)
    assert isinstance(LowRankRootOperator(R) + LowRankRootOperator(R), LowRankRootOperator)
    assert isinstance(K + ConstantDiagOperator(torch.tensor([0.5], dtype=DT), 4), KroneckerProductAddedDiag)
    assert isinstance(K * K, KroneckerProductOperator)
    assert isinstance(K @ K, KroneckerProductOperator)
    assert_close((K @ K).to_dense(), K.to_dense() @ K.to_dense())
    task = KroneckerProductOperator(
        DiagOperator(torch.tensor([0.1, 0.2], dtype=DT)), ConstantDiagOperator(torch.ones(1, dtype=DT), 2)
    )
    noisy = (K + task).add_jitter(1e-3)
    assert isinstance(noisy, KroneckerProductAddedDiag) and noisy.diag_factors[1] is None
    assert choose_solver(noisy) == "kronecker"
    assert_close(noisy.to_dense(), K.to_dense() + task.to_dense() + 1e-3 * torch.eye(4, dtype=DT))


def _forbid_dense(monkeypatch):
    def refuse(self):
        raise AssertionError(f"{type(self).__name__} was made dense")

    for cls in (LowRankRootOperator, KroneckerProductOperator, AddedDiagOperator):
        monkeypatch.setattr(cls, "_dense", refuse)
    monkeypatch.setattr(Operator, "to_dense", lambda self: refuse(self))


def _structured(requires_grad=True):
    R = _randn(2, 7, 2, seed=3).requires_grad_(requires_grad)
    d = (_randn(2, 7, seed=4).square() + 0.2).requires_grad_(requires_grad)
    A = _randn(3, 3, seed=5).requires_grad_(requires_grad)
    C = _randn(2, 4, 4, seed=6).requires_grad_(requires_grad)
    s = torch.tensor(0.3, dtype=DT, requires_grad=requires_grad)
    dt = (_randn(3, seed=7).square() + 0.1).requires_grad_(requires_grad)
    ops = {
        "low_rank_added_diag": lambda: LowRankRootOperator(R) + DiagOperator(d),
        "kronecker": lambda: KroneckerProductOperator(spd(A), spd(C)),
        "kronecker_added_const": lambda: KroneckerProductOperator(spd(A), spd(C)).add_diagonal(s),
        "kronecker_added_task_diag": lambda: KroneckerProductAddedDiag(
            KroneckerProductOperator(spd(A), spd(C)), diag_factors=[dt, None]
        ),
    }
    return ops, [R, d, A, C, s, dt]


@pytest.mark.parametrize(
    "name", ["low_rank_added_diag", "kronecker", "kronecker_added_const", "kronecker_added_task_diag"]
)
def test_structured_solves_never_form_the_dense_matrix(name, monkeypatch):
    ops, leaves = _structured()
    with torch.no_grad():
        dense = ops[name]().to_dense()
    n = dense.shape[-1]
    rhs = _randn(2, n, 2, seed=8)
    expected_x = torch.linalg.solve(dense, rhs)
    _forbid_dense(monkeypatch)
    op = ops[name]()
    x = op.solve(rhs)
    quad, ld = inv_quad_logdet(op, rhs)
    (quad.sum() + ld.sum() + x.sum()).backward()
    assert all(t.grad is None or torch.isfinite(t.grad).all() for t in leaves)
    monkeypatch.undo()
    assert_close(x, expected_x)
    assert_close(ld, torch.logdet(dense))
    assert_close(quad, (rhs * expected_x).sum((-2, -1)))


def test_structured_solves_at_a_size_whose_dense_matrix_is_over_budget():
    n, r = 3000, 4
    R = _randn(n, r, seed=9)
    d = _randn(n, seed=10).square() + 0.5
    A1, A2 = spd(_randn(50, 50, seed=11)), spd(_randn(60, 60, seed=12))
    b = _randn(n, 1, seed=13)
    with settings.max_dense_memory(2**20):  # 1 MiB: a 3000 x 3000 float64 matrix needs 69 MiB
        for op in (LowRankRootOperator(R).add_diagonal(d), KroneckerProductOperator(A1, A2).add_jitter(0.1)):
            x = op.solve(b)
            assert_close(op.matmul(x), b, loose=1e3)
            _, ld = op.inv_quad_logdet(b, logdet=True)
            assert torch.isfinite(ld).all()
    # the Kronecker log-determinant: Σ over the eigenvalues of A1 ⊗ A2 + 0.1 I
    lam = (torch.linalg.eigvalsh(A1)[:, None] * torch.linalg.eigvalsh(A2)[None, :]).flatten()
    assert_close(ld, (lam + 0.1).log().sum())


def test_woodbury_gradcheck():
    R = _randn(2, 5, 2, seed=14).requires_grad_(True)
    d = (_randn(2, 5, seed=15).square() + 0.3).requires_grad_(True)
    b = _randn(2, 5, 2, seed=16).requires_grad_(True)

    def f(R, d, b):
        fac = factorize(LowRankRootOperator(R).add_diagonal(d))
        assert fac.kind == "woodbury"
        quad, ld = fac.inv_quad_logdet(b)
        return fac.solve(b), quad, ld, fac.logdet()

    assert torch.autograd.gradcheck(f, (R, d, b))


def test_kronecker_gradcheck():
    A = _randn(2, 2, seed=17).requires_grad_(True)
    C = _randn(2, 3, 3, seed=18).requires_grad_(True)
    s = torch.tensor([0.4], dtype=DT, requires_grad=True)
    dt = (_randn(2, seed=19).square() + 0.2).requires_grad_(True)
    b = _randn(2, 6, 2, seed=20)

    def f(A, C, s, dt):
        K = KroneckerProductOperator(spd(A), spd(C))
        out = []
        for op in (K, K.add_diagonal(s), KroneckerProductAddedDiag(K, diag_factors=[dt, None])):
            fac = factorize(op)
            assert fac.kind == "kronecker"
            out += [fac.solve(b), fac.logdet()]
        return tuple(out)

    assert torch.autograd.gradcheck(f, (A, C, s, dt), fast_mode=True)


def test_iterative_kind_for_large_or_unstructured():
    A = spd(_randn(40, 40, seed=21)) + torch.eye(40, dtype=DT)
    b = _randn(40, 2, seed=22)
    with settings.max_cholesky_size(10), settings.cg_tolerance(1e-10), settings.eval_cg_tolerance(1e-10):
        for op in (DenseOperator(A), DenseOperator(A) + DenseOperator(0 * A)):
            fac = factorize(op)
            assert fac.kind == "iterative" and fac.cholesky is None
            assert_close(fac.solve(b), torch.linalg.solve(A, b), loose=1e3)
            quad, _ = fac.inv_quad_logdet(b, logdet=False)
            assert_close(quad, (b * torch.linalg.solve(A, b)).sum(), loose=1e3)


def test_block_diag_solves_block_by_block():
    W = _randn(2, 3, 2, 2, seed=23)
    op = BlockDiagOperator(spd(W))
    dense = op.to_dense()
    b = _randn(2, 6, 2, seed=24)
    fac = factorize(op)
    assert_close(fac.solve(b), torch.linalg.solve(dense, b))
    assert_close(fac.logdet(), torch.logdet(dense))
    assert_close(fac.cholesky, torch.linalg.cholesky(dense))
    assert_close(fac.inv_quad_logdet(b, reduce=False)[0], (b * torch.linalg.solve(dense, b)).sum(-2))


def test_exact_mll_path_keeps_the_closed_form_backward():
    from torchgp.kernels import RBFKernel

    k = RBFKernel().double()
    X = _randn(8, 1, seed=25)
    y = _randn(8, seed=26)
    noise = torch.tensor(0.2, dtype=DT, requires_grad=True)
    op = KernelOperator(k, X, X).add_diagonal(noise)
    quad, ld = inv_quad_logdet(op, y)
    assert quad.grad_fn is not None and "CholeskyInvQuadLogdet" in type(quad.grad_fn).__name__
    (quad + ld).backward()
    g_ls, g_noise = k.raw_lengthscale.grad.clone(), noise.grad.clone()
    k.zero_grad()
    noise.grad = None
    K = k(X).to_dense() + noise * torch.eye(8, dtype=DT)
    ((y @ torch.linalg.solve(K, y)) + torch.logdet(K)).backward()
    assert_close(g_ls, k.raw_lengthscale.grad)
    assert_close(g_noise, noise.grad)


def test_multivariate_normal_over_a_kronecker_covariance():
    K = KroneckerProductOperator(spd(_randn(2, 2, seed=27)), spd(_randn(3, 3, seed=28))).add_jitter(0.2)
    mean = _randn(6, seed=29)
    y = _randn(6, seed=30)
    mvn = MultivariateNormal(mean, K)
    ref = torch.distributions.MultivariateNormal(mean, K.to_dense())
    assert_close(mvn.log_prob(y), ref.log_prob(y))
    assert isinstance((mvn + mvn).lazy_covariance_matrix, Operator)
    assert_close((mvn * 2.0).covariance_matrix, 4 * K.to_dense())


def test_kronecker_plus_diagonal_keeps_its_structure_through_indexing_and_broadcasting():
    K = KroneckerProductOperator(spd(_randn(2, 2, 2, seed=31)), spd(_randn(3, 3, seed=32)))
    op = KroneckerProductAddedDiag(K, diag_factors=[_randn(2, 2, seed=33).square() + 0.1, None])
    for sub, ref in (
        (op[1], op.to_dense()[1]),
        (op.expand(4, 2, 6, 6), op.to_dense().expand(4, 2, 6, 6)),
        (op.mT, op.to_dense().mT),
    ):
        assert isinstance(sub, KroneckerProductAddedDiag) and choose_solver(sub) == "kronecker"
        assert_close(sub.to_dense(), ref)


def test_a_likelihoods_expanded_scalar_noise_keeps_the_kronecker_solver():
    K = KroneckerProductOperator(spd(_randn(2, 2, seed=34)), spd(_randn(3, 3, seed=35)))
    noise = torch.tensor(0.2, dtype=DT).expand(6)  # (n,) with stride 0, as a homoskedastic likelihood passes it
    op = AddedDiagOperator(K, noise)
    assert isinstance(op, KroneckerProductAddedDiag) and choose_solver(op) == "kronecker"
    assert_close(op.logdet(), torch.logdet(K.to_dense() + 0.2 * torch.eye(6, dtype=DT)))
