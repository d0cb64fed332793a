"""Pivoted Cholesky from rows only, and the Woodbury preconditioner built on it."""

import torch

from torchgp import settings
from torchgp.linalg.operators import DenseOperator, KernelOperator
from torchgp.linalg.pivoted_cholesky import PivotedCholeskyPreconditioner, build_preconditioner, pivoted_cholesky


class _RBF:
    def __init__(self, lengthscale):
        self.lengthscale = lengthscale

    def parameters(self):
        return [self.lengthscale]

    def output_shape(self, x1, x2, **params):
        return torch.Size([*torch.broadcast_shapes(x1.shape[:-2], x2.shape[:-2]), x1.shape[-2], x2.shape[-2]])

    def evaluate_block(self, x1, x2, diag=False, **params):
        if diag:
            return torch.ones(x1.shape[:-1], dtype=x1.dtype)
        return torch.exp(-0.5 * torch.cdist(x1, x2).square() / self.lengthscale**2)


def test_full_rank_reproduces_matrix():
    A = torch.randn(2, 15, 15, dtype=torch.float64)
    A = A @ A.mT + 0.1 * torch.eye(15, dtype=torch.float64)
    L = pivoted_cholesky(DenseOperator(A), rank=15)
    assert L.shape == (2, 15, 15)
    torch.testing.assert_close(L @ L.mT, A, rtol=1e-10, atol=1e-10)


def test_low_rank_kernel_operator_error_decreases():
    X = torch.rand(200, 2, dtype=torch.float64)
    op = KernelOperator(_RBF(torch.tensor(0.5, dtype=torch.float64)), X, X)
    K = op.to_dense()
    errs = [torch.linalg.matrix_norm(K - (L := pivoted_cholesky(op, r)) @ L.mT, ord=2).item() for r in (5, 10, 20)]
    assert errs[0] > errs[1] > errs[2]
    assert errs[2] < 1e-4 * torch.linalg.matrix_norm(K, ord=2).item()


def test_woodbury_solve_and_logdet():
    L = torch.randn(30, 4, dtype=torch.float64)
    D = torch.rand(30, dtype=torch.float64) + 0.5
    P = L @ L.T + torch.diag(D)
    pre = PivotedCholeskyPreconditioner(L, D)
    V = torch.randn(30, 3, dtype=torch.float64)
    torch.testing.assert_close(pre.solve(V), torch.linalg.solve(P, V), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(pre.logdet(), torch.logdet(P), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(pre.inv_diagonal(), torch.linalg.inv(P).diagonal(), rtol=1e-10, atol=1e-10)


def test_probe_covariance_is_preconditioner():
    L = torch.randn(6, 2, dtype=torch.float64)
    D = torch.rand(6, dtype=torch.float64) + 0.5
    pre = PivotedCholeskyPreconditioner(L, D)
    z = pre.sample(40000, torch.Generator().manual_seed(1))
    emp = z @ z.T / z.shape[-1]
    torch.testing.assert_close(emp, L @ L.T + torch.diag(D), rtol=0, atol=0.1)


def test_build_preconditioner_with_noise():
    X = torch.rand(100, 2, dtype=torch.float64)
    op = KernelOperator(_RBF(torch.tensor(0.4, dtype=torch.float64)), X, X)
    noise = torch.full((100,), 0.05, dtype=torch.float64)
    with settings.preconditioner_tolerance(1e-12):  # GPyTorch's default 1e-3 would stop at tr(K - LLᵀ) ≤ 1e-3
        pre = build_preconditioner(op, noise, rank=40)
    K = op.to_dense() + torch.diag(noise)
    V = torch.randn(100, 2, dtype=torch.float64)
    # P ≈ K: the preconditioned matrix is close to the identity.
    torch.testing.assert_close(pre.solve(K @ V), V, rtol=0, atol=1e-3)


def test_build_preconditioner_stops_once_good_enough():
    # With large noise a low-rank factor already makes P⁻¹(K + σ²I) ≈ I: the rank adapts down.
    X = torch.rand(300, 2, dtype=torch.float64)
    op = KernelOperator(_RBF(torch.tensor(0.4, dtype=torch.float64)), X, X)
    big = build_preconditioner(op, torch.full((300,), 10.0, dtype=torch.float64), rank=200)
    small = build_preconditioner(op, torch.full((300,), 1e-4, dtype=torch.float64), rank=200)
    assert big.L.shape[-1] < small.L.shape[-1]
    K = op.to_dense() + 10.0 * torch.eye(300, dtype=torch.float64)
    V = torch.randn(300, 2, dtype=torch.float64)
    torch.testing.assert_close(big.solve(K @ V), V, rtol=0, atol=1e-2)


def test_given_pivots_reproduce_the_search_and_are_followed():
    pchol = pivoted_cholesky
    g = torch.Generator().manual_seed(8)
    X = torch.rand(60, 2, generator=g, dtype=torch.float64)
    K = torch.exp(-0.5 * torch.cdist(X, X).square() / 0.3**2)
    L, piv = pchol(DenseOperator(K), 12, return_pivots=True)
    assert piv.shape == (12,) and len(set(piv.tolist())) == 12
    L2, piv2 = pchol(DenseOperator(K), 3, pivots=piv, return_pivots=True)  # rank is ignored: the pivots decide
    assert torch.equal(piv2, piv)
    torch.testing.assert_close(L2, L, rtol=1e-12, atol=1e-12)
    # Other pivots (reversed): still an exact factor of K on those rows (L Lᵀ interpolates K there).
    other = piv.flip(-1)
    L3 = pchol(DenseOperator(K), 12, pivots=other)
    torch.testing.assert_close((L3 @ L3.mT)[other][:, other], K[other][:, other], rtol=1e-9, atol=1e-9)


def _greedy_reference(A: torch.Tensor, rank: int):
    """Column-by-column greedy pivoted Cholesky of a dense ``(n, n)`` matrix (Harbrecht et al. 2012, Alg. 1)."""
    n = A.shape[-1]
    d = A.diagonal().clone()
    L = torch.zeros(n, rank, dtype=A.dtype)
    piv = []
    for m in range(rank):
        i = int(d.argmax())
        piv.append(i)
        col = (A[i] - L[:, :m] @ L[i, :m]) / d[i].sqrt()
        L[:, m] = col
        d = d - col.square()
        d[i] = 0.0
    return L, torch.tensor(piv)


def test_blocked_factor_equals_column_by_column(monkeypatch):
    import torchgp.linalg.pivoted_factor as pc

    # few candidates per block: many blocks, and pivots outside the candidates that end a block early
    monkeypatch.setattr(pc, "_CANDIDATES", 6)
    monkeypatch.setattr(pc, "_BLOCK", 4)
    g = torch.Generator().manual_seed(0)
    X = torch.rand(2, 150, 2, generator=g, dtype=torch.float64)
    op = KernelOperator(_RBF(torch.tensor(0.3, dtype=torch.float64)), X, X)
    L, piv = pivoted_cholesky(op, rank=40, return_pivots=True)
    for b in range(2):
        L_ref, piv_ref = _greedy_reference(op.to_dense()[b], 40)
        assert torch.equal(piv[b], piv_ref)
        torch.testing.assert_close(L[b], L_ref, rtol=1e-10, atol=1e-10)


def test_blocked_factor_ties_and_given_pivots(monkeypatch):
    import torchgp.linalg.pivoted_factor as pc

    monkeypatch.setattr(pc, "_CANDIDATES", 3)
    monkeypatch.setattr(pc, "_BLOCK", 2)
    X = torch.rand(60, 2, dtype=torch.float64)
    op = KernelOperator(_RBF(torch.tensor(0.5, dtype=torch.float64)), X, X)  # constant diagonal: first pivots tie
    L, piv = pivoted_cholesky(op, rank=15, return_pivots=True)
    L_ref, piv_ref = _greedy_reference(op.to_dense(), 15)
    assert torch.equal(piv, piv_ref)
    torch.testing.assert_close(L, L_ref, rtol=1e-10, atol=1e-10)
    # reusing the pivots (in blocks of the given ones) gives the same factor
    L2 = pivoted_cholesky(op, rank=99, pivots=piv)
    torch.testing.assert_close(L2, L, rtol=1e-10, atol=1e-10)


def test_blocked_factor_float32_matches_float64():
    g = torch.Generator().manual_seed(3)
    X = torch.rand(400, 3, generator=g, dtype=torch.float64)
    op64 = KernelOperator(_RBF(torch.tensor(0.4, dtype=torch.float64)), X, X)
    op32 = KernelOperator(_RBF(torch.tensor(0.4)), X.float(), X.float())
    L64, p64 = pivoted_cholesky(op64, rank=30, return_pivots=True)
    L32, p32 = pivoted_cholesky(op32, rank=30, return_pivots=True)
    assert torch.equal(p32[:10], p64[:10])  # the leading pivots are well separated
    torch.testing.assert_close(L32[:, :10].double(), L64[:, :10], rtol=0, atol=1e-4)


def test_woodbury_factor_in_the_factors_memory():
    g = torch.Generator().manual_seed(4)
    L = torch.randn(2, 5, 30, generator=g, dtype=torch.float64).mT  # Lᵀ contiguous, as pivoted_cholesky returns it
    D = torch.rand(2, 30, generator=g, dtype=torch.float64) + 0.5
    P = L @ L.mT + torch.diag_embed(D)
    V = torch.randn(2, 30, 3, generator=g, dtype=torch.float64)
    ref = torch.linalg.solve(P, V)
    pre = PivotedCholeskyPreconditioner(L.clone(memory_format=torch.preserve_format), D, own_factor=True)
    kept = pre.L
    z = pre.sample(4, torch.Generator().manual_seed(0))
    pre.forget_factor()
    torch.testing.assert_close(pre.solve(V), ref, rtol=1e-10, atol=1e-10)
    assert pre.W.data_ptr() == kept.data_ptr() and z.shape == (2, 30, 4)  # W took L's memory
    L0 = L.clone()
    other = PivotedCholeskyPreconditioner(L, D)  # not its own: L is left as it was
    other.forget_factor()
    torch.testing.assert_close(other.solve(V), ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(other.inv_diagonal(), torch.linalg.inv(P).diagonal(dim1=-2, dim2=-1))
    assert other.rank == 5 and torch.equal(L, L0)


def test_solves_and_leading_factor_from_the_factor_equal_those_from_w():
    g = torch.Generator().manual_seed(5)
    L = torch.randn(3, 40, 6, generator=g, dtype=torch.float64)
    D = torch.rand(40, generator=g, dtype=torch.float64) + 0.5  # broadcast over L's batch
    P = L @ L.mT + torch.diag(D)
    V = torch.randn(3, 40, 2, generator=g, dtype=torch.float64)
    pre = PivotedCholeskyPreconditioner(L, D)
    from_factor = pre.solve(V), pre.leading_factor(4)
    W = pre.W  # formed now: solves switch to it
    torch.testing.assert_close(from_factor[0], torch.linalg.solve(P, V), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(pre.solve(V), from_factor[0], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(from_factor[1], W[..., :4], rtol=1e-10, atol=1e-10)
    # the rank-4 leading part's Woodbury factor inverts L₄L₄ᵀ + D
    W4 = from_factor[1]
    P4 = L[..., :4] @ L[..., :4].mT + torch.diag(D)
    torch.testing.assert_close(torch.diag(1 / D) - W4 @ W4.mT, torch.linalg.inv(P4), rtol=1e-10, atol=1e-10)
    # float32 factor, float64 columns: the result in the columns' dtype
    pre32 = PivotedCholeskyPreconditioner(L.float(), D.float())
    out = pre32.solve(V)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, from_factor[0], rtol=1e-4, atol=1e-5)
    empty = PivotedCholeskyPreconditioner(L[..., :0], D)
    torch.testing.assert_close(empty.solve(V), V / D.unsqueeze(-1))
