"""Property-based checks (hypothesis) of the operator family over kinds, sizes, batch shapes and dtypes.

Each drawn operator is built from random tensors together with its dense reference (built independently with
torch); every operator method checked must agree with the same operation on the dense matrix. ``derandomize``:
the same examples on every run.
"""

import pytest
import torch

from tests._tol import assert_close
from torchgp.linalg.operators import (
    AddedDiagOperator,
    ConstantMulOperator,
    DenseOperator,
    DiagOperator,
    KroneckerProductOperator,
    LowRankRootOperator,
    ProductOperator,
    SumOperator,
)

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

FEW = settings(max_examples=30, deadline=None, derandomize=True)
KINDS = ["dense", "diag", "added_diag", "low_rank", "low_rank_diag", "kronecker", "sum", "product", "const_mul"]


def _randn(gen, *shape, dtype):
    return torch.randn(tuple(shape), generator=gen, dtype=torch.float64).to(dtype)


def _spd(gen, batch, n, dtype):
    W = _randn(gen, *batch, n, n, dtype=torch.float64)
    return (W @ W.mT / n + 0.5 * torch.eye(n, dtype=torch.float64)).to(dtype)


def _kron(A, B):
    n1, n2 = A.shape[-1], B.shape[-1]
    return (A[..., :, None, :, None] * B[..., None, :, None, :]).reshape(*A.shape[:-2], n1 * n2, n1 * n2)


def _build(kind, batch, n, dtype, seed):
    """``(operator, dense reference)``, both ``(*batch, N, N)`` and positive definite."""
    gen = torch.Generator().manual_seed(seed)
    if kind == "dense":
        A = _spd(gen, batch, n, dtype)
        return DenseOperator(A), A
    if kind == "diag":
        d = _randn(gen, *batch, n, dtype=dtype).abs() + 0.5
        return DiagOperator(d), torch.diag_embed(d)
    if kind == "added_diag":
        A, d = _spd(gen, batch, n, dtype), _randn(gen, *batch, n, dtype=dtype).abs() + 0.1
        return AddedDiagOperator(DenseOperator(A), DiagOperator(d)), A + torch.diag_embed(d)
    if kind in ("low_rank", "low_rank_diag"):
        R = _randn(gen, *batch, n, max(1, n // 2), dtype=dtype)
        op, ref = LowRankRootOperator(R), R @ R.mT
        if kind == "low_rank":  # rank-deficient: add a diagonal through the operator algebra to stay PD
            return op, ref
        d = _randn(gen, *batch, n, dtype=dtype).abs() + 0.5
        return op + DiagOperator(d), ref + torch.diag_embed(d)
    if kind == "kronecker":
        A, B = _spd(gen, batch, 2, dtype), _spd(gen, batch, n, dtype)
        return KroneckerProductOperator(DenseOperator(A), DenseOperator(B)), _kron(A, B)
    if kind == "sum":
        A, B = _spd(gen, batch, n, dtype), _spd(gen, batch, n, dtype)
        return SumOperator(DenseOperator(A), DenseOperator(B)), A + B
    if kind == "product":  # Hadamard product of PD matrices is PD (Schur product theorem)
        A, B = _spd(gen, batch, n, dtype), _spd(gen, batch, n, dtype)
        return ProductOperator(DenseOperator(A), DenseOperator(B)), A * B
    A, c = _spd(gen, batch, n, dtype), 1.7
    return ConstantMulOperator(DenseOperator(A), torch.tensor(c, dtype=dtype)), c * A


operators = st.tuples(
    st.sampled_from(KINDS),
    st.lists(st.integers(1, 3), min_size=0, max_size=2).map(tuple),
    st.integers(1, 5),
    st.sampled_from([torch.float32, torch.float64]),
    st.integers(0, 2**16),
)


@FEW
@given(case=operators, k=st.integers(1, 3))
def test_operator_algebra_matches_the_dense_matrix(case, k):
    kind, batch, n, dtype, seed = case
    op, ref = _build(kind, batch, n, dtype, seed)
    N = ref.shape[-1]
    assert tuple(op.shape) == tuple(ref.shape)
    assert_close(op.to_dense(), ref)
    assert_close(op.diagonal(), ref.diagonal(dim1=-2, dim2=-1))
    rhs = _randn(torch.Generator().manual_seed(seed + 1), *batch, N, k, dtype=dtype)
    assert_close(op.matmul(rhs), ref @ rhs, loose=10)
    assert_close(op.mT.to_dense(), ref.mT)
    assert_close((op + op).to_dense(), 2 * ref, loose=10)
    assert_close((op * 3.0).to_dense(), 3 * ref, loose=10)
    if batch:
        assert_close(op[0].to_dense(), ref[0])


@FEW
@given(case=operators)
def test_operator_solves_and_log_determinants_match_the_dense_matrix(case):
    kind, batch, n, dtype, seed = case
    op, ref = _build(kind, batch, n, dtype, seed)
    if kind == "low_rank" and ref.shape[-1] > max(1, n // 2):
        return  # rank-deficient: no solve or log-determinant to compare
    N = ref.shape[-1]
    ref64 = ref.double()
    rhs = _randn(torch.Generator().manual_seed(seed + 2), *batch, N, 2, dtype=dtype)
    loose = 1e3 if dtype == torch.float32 else 1e2  # conditioning of the drawn matrices, not the operator
    assert_close(op.solve(rhs), torch.linalg.solve(ref64, rhs.double()).to(dtype), loose=loose)
    quad, logdet = op.inv_quad_logdet(rhs, logdet=True)
    quad_ref = (rhs.double() * torch.linalg.solve(ref64, rhs.double())).sum((-2, -1))
    assert_close(quad, quad_ref.to(dtype), loose=loose)
    assert_close(logdet, torch.linalg.slogdet(ref64)[1].to(dtype), loose=loose)


def test_added_diag_takes_a_diagonal_operator_and_refuses_a_general_one():
    A, d = torch.eye(3, dtype=torch.float64) * 2, torch.arange(1.0, 4.0, dtype=torch.float64)
    op = AddedDiagOperator(DenseOperator(A), DiagOperator(d))  # GPyTorch's AddedDiagLinearOperator(A, Diag(d))
    assert op.shape == (3, 3)
    assert torch.equal(op.to_dense(), A + torch.diag(d))
    with pytest.raises(TypeError, match="SumOperator"):
        AddedDiagOperator(DenseOperator(A), DenseOperator(A))
