"""BlockInterleavedOperator (independent tasks in interleaved row order) against its dense matrix, through the
operator conformance tests of ``tests/linalg/test_operators.py``, and its solver: per-block, never ``nt × nt``."""

from __future__ import annotations

import pytest
import torch

import torchgp
from tests._tol import assert_close
from tests.linalg import test_operators as conformance
from tests.linalg._operator_cases import DT, Case, kernel, spd
from torchgp.linalg import inv_quad_logdet
from torchgp.linalg.operators import (
    BlockDiagOperator,
    BlockInterleavedOperator,
    DenseOperator,
    KernelOperator,
)
from torchgp.linalg.solvers import BlockInterleavedFactor, choose_solver, factorize

B, T, N = 2, 3, 2  # batch, tasks (blocks), points: matrices of N T = 6 rows


def interleave(blocks: torch.Tensor) -> torch.Tensor:
    """The dense reference: ``block_diag(K_1, …, K_t)`` with rows and columns put in the order ``i t + a``."""
    t, n = blocks.shape[-3], blocks.shape[-1]
    task_major = torch.stack([torch.block_diag(*b) for b in blocks.reshape(-1, t, n, n)])
    perm = torch.arange(n * t).reshape(t, n).mT.reshape(-1)  # interleaved row i t + a is task-major row a n + i
    return task_major[:, perm][:, :, perm].reshape(*blocks.shape[:-3], n * t, n * t)


def _pos(t):
    return 0.5 + t.square()


CASES = [
    Case(
        "block_interleaved",
        [(B, T, N, N)],
        lambda W: BlockInterleavedOperator(DenseOperator(spd(W))),
        lambda W: interleave(spd(W)),
    ),
    Case(
        "block_interleaved_kernel",
        [(B, T, N, 1)],
        lambda X: BlockInterleavedOperator(KernelOperator(kernel(), X, X).add_jitter(0.1)),
        lambda X: interleave(kernel()(X, X).to_dense() + 0.1 * torch.eye(N, dtype=DT)),
    ),
    Case(
        "block_interleaved_added_diag",
        [(B, T, N, N), (B, N * T)],
        lambda W, d: BlockInterleavedOperator(DenseOperator(spd(W))).add_diagonal(_pos(d)),
        lambda W, d: interleave(spd(W)) + torch.diag_embed(_pos(d)),
    ),
    Case(
        "block_interleaved_block_dim",
        [(T, B, N, N)],
        lambda W: BlockInterleavedOperator(DenseOperator(spd(W)), block_dim=0),
        lambda W: interleave(spd(W).transpose(0, 1)),
    ),
]
IDS = [c.name for c in CASES]
CONFORMANCE = [
    "test_dense_diagonal_and_products",
    "test_indexing",
    "test_reductions_and_expand",
    "test_algebra",
    "test_detach_and_casts",
    "test_solve_and_logdet",
    "test_gradients_equal_finite_differences",
    "test_gradients_equal_the_dense_computation",
]


@pytest.mark.parametrize("check", CONFORMANCE)
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_conformance(case, check):
    getattr(conformance, check)(case)


def test_the_interleaved_entries():
    K = spd(torch.randn(T, N, N, dtype=DT))
    A = BlockInterleavedOperator(K).to_dense()
    for i in range(N):
        for a in range(T):
            for j in range(N):
                for b in range(T):
                    assert A[i * T + a, j * T + b] == (K[a, i, j] if a == b else 0)


def test_it_keeps_its_structure():
    W, d = torch.randn(B, T, N, N, dtype=DT), _pos(torch.randn(B, N * T, dtype=DT))
    op = BlockInterleavedOperator(DenseOperator(spd(W)))
    for got in (
        op.add_diagonal(d),
        op.add_jitter(0.1),
        op + op,
        op * 2.0,
        op.mul(op),
        op.mT,
        op[1],
        op.expand(3, B, 6, 6),
    ):
        assert isinstance(got, BlockInterleavedOperator), type(got)
    whole_points = op[..., 3:6, 0:3]  # rows and columns of whole points: the blocks, sliced
    assert isinstance(whole_points, BlockInterleavedOperator)
    assert_close(whole_points.to_dense(), interleave(spd(W))[..., 3:6, 0:3])
    assert_close(op.add_diagonal(d).base.diagonal(), spd(W).diagonal(dim1=-2, dim2=-1) + d.reshape(B, N, T).mT)
    assert op.base_linear_op is op.base


def test_the_solver_goes_block_by_block():
    W = torch.randn(B, T, N, N, dtype=DT)
    op = BlockInterleavedOperator(DenseOperator(spd(W)))
    f = factorize(op)
    assert isinstance(f, BlockInterleavedFactor) and f.kind == "cholesky" == choose_solver(op)
    A = interleave(spd(W))
    assert_close(f.cholesky, torch.linalg.cholesky(A))  # the block factors, interleaved, are A's Cholesky factor
    # the permuted block-diagonal matrix has the same factor as the block-diagonal one, rows permuted
    perm = torch.arange(N * T).reshape(T, N).mT.reshape(-1)
    R = torch.randn(B, N * T, 2, dtype=DT)
    assert_close(f.solve(R), factorize(BlockDiagOperator(DenseOperator(spd(W)))).solve(R[:, perm.argsort()])[:, perm])
    with torchgp.settings.max_cholesky_size(N - 1):  # blocks too large for Cholesky: the iterative path
        assert choose_solver(op) == "iterative"


def test_inv_quad_logdet_gradcheck_and_no_dense_matrix():
    n, t = 30, 4
    X = torch.rand(t, n, 1, dtype=DT)
    R = torch.randn(n * t, 2, dtype=DT)
    noise = torch.full((n * t,), 0.1, dtype=DT)

    def f(X, R):
        op = BlockInterleavedOperator(KernelOperator(kernel(), X, X)).add_diagonal(noise)
        return inv_quad_logdet(op, R, logdet=True)

    budget = 8 * t * n * n * 3  # room for the t blocks n × n (and copies), not for the (nt)² matrix
    with torchgp.settings.max_dense_memory(budget):
        quad, ld = f(X, R)
    A = interleave(kernel()(X, X).to_dense()) + 0.1 * torch.eye(n * t, dtype=DT)
    assert_close(quad, (R * torch.linalg.solve(A, R)).sum())
    assert_close(ld, torch.logdet(A))
    Xs, Rs = X[:, :5].clone().requires_grad_(True), R[:20].clone().requires_grad_(True)
    noise = noise[:20]
    assert torch.autograd.gradcheck(f, (Xs, Rs), eps=1e-6, atol=1e-6, fast_mode=True)


def test_bad_blocks_are_refused():
    with pytest.raises(torchgp.errors.ShapeError, match="blocks of shape"):
        BlockInterleavedOperator(torch.eye(3, dtype=DT))
    with pytest.raises(torchgp.errors.ShapeError, match="block_dim"):
        BlockInterleavedOperator(torch.eye(3, dtype=DT).expand(2, 3, 3), block_dim=-1)
