"""Every operator (batched) against its dense matrix: products, diagonal, indexing, reductions, algebra, gradients."""

from __future__ import annotations

import pytest
import torch

from tests._tol import assert_close
from tests.linalg._operator_cases import CASE_IDS, CASES, DT, SPD_CASES, SPD_IDS
from torchgp.linalg.operators import AddedDiagOperator, DenseOperator, Operator


def _build(case, requires_grad=False, seed=0):
    t = case.tensors(seed, requires_grad)
    return t, case.make(*t), case.dense(*t)


def _dense(x):
    return x.to_dense() if isinstance(x, Operator) else x


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_dense_diagonal_and_products(case):
    _, op, A = _build(case)
    n = A.shape[-1]
    g = torch.Generator().manual_seed(1)
    V = torch.randn(A.shape[0], n, 3, generator=g, dtype=DT)
    v = torch.randn(n, generator=g, dtype=DT)
    assert op.shape == A.shape and op.size() == A.shape and op.size(-1) == n
    assert op.dim() == 3 and op.numel() == A.numel() and op.batch_shape == A.shape[:-2]
    assert op.dtype == DT and op.device == A.device
    assert_close(op.to_dense(), A)
    assert_close(op.evaluate(), A)
    assert_close(op.diagonal(), A.diagonal(dim1=-2, dim2=-1))
    if not isinstance(op, AddedDiagOperator):  # there ``.diag`` is the added diagonal itself
        assert_close(op.diag(), A.diagonal(dim1=-2, dim2=-1))
    assert_close(op.matmul(V), A @ V)
    assert_close(op @ V, A @ V)
    assert_close(op @ v, A @ v)
    assert_close(op @ V[0], A @ V[0])  # rhs broadcast over the batch
    assert_close(V.mT @ op, V.mT @ A)  # tensor @ operator
    assert_close(op.mT.to_dense(), A.mT)
    assert_close(op.T.to_dense(), A.mT)
    assert_close(op.transpose(-1, -2).to_dense(), A.mT)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_indexing(case):
    _, op, A = _build(case)
    n = A.shape[-1]
    rows, cols = torch.tensor([0, 2, n - 1]), torch.tensor([1, 1, 0])
    batch_like = [op[0], op[1:], op[torch.tensor([1, 0])], op[..., :, :]]
    refs = [A[0], A[1:], A[torch.tensor([1, 0])], A]
    for sub, ref in zip(batch_like, refs):
        assert isinstance(sub, Operator)
        assert_close(sub.to_dense(), ref)
    sub = op[..., 1:4, 1:4]
    assert isinstance(sub, Operator)
    assert_close(sub.to_dense(), A[..., 1:4, 1:4])
    assert_close(op[..., 1:3, 2:5].to_dense(), A[..., 1:3, 2:5])
    for idx in [(..., 2, slice(None)), (..., slice(None), 3), (..., rows, cols), (1, 2, 3), (..., rows, slice(1, 4))]:
        out = op[idx]
        assert isinstance(out, torch.Tensor)
        assert_close(out, A[idx])
    assert_close(op[torch.tensor([1, 0]), rows[:2], cols[:2]], A[torch.tensor([1, 0]), rows[:2], cols[:2]])


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_reductions_and_expand(case):
    _, op, A = _build(case)
    s = op.sum(dim=0)
    assert isinstance(s, Operator)
    assert_close(s.to_dense(), A.sum(0))
    assert_close(op.sum(dim=-3).to_dense(), A.sum(-3))
    p = op.prod(dim=0)
    assert isinstance(p, Operator)
    assert_close(p.to_dense(), A.prod(0))
    assert_close(op.sum(dim=-1), A.sum(-1))
    assert_close(op.sum(dim=-2), A.sum(-2))
    assert_close(op.sum(), A.sum())
    e = op.expand(3, *A.shape)
    assert e.shape == (3, *A.shape)
    assert_close(e.to_dense(), A.expand(3, *A.shape))
    assert_close(op.expand(-1, *A.shape[-2:]).to_dense(), A)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_algebra(case):
    t, op, A = _build(case)
    c = torch.tensor([1.5, 0.5], dtype=DT)
    pairs = [
        (-op, -A),
        (op * 2.5, A * 2.5),
        (2.5 * op, A * 2.5),
        (op / 4, A / 4),
        (op.mul(c[:, None, None]), A * c[:, None, None]),
        (op.mul(torch.tensor(3.0, dtype=DT)), 3 * A),
        (op + op, 2 * A),
        (op - op * 0.5, 0.5 * A),
        (op + A, 2 * A),
        (A + op, 2 * A),
        (op.mul(op), A * A),
        (op * op, A * A),
        (op * A, A * A),
        (A * op, A * A),
        (op.add_diagonal(torch.tensor(0.3, dtype=DT)), A + 0.3 * torch.eye(A.shape[-1], dtype=DT)),
        (op.add_jitter(), A + 1e-3 * torch.eye(A.shape[-1], dtype=DT)),
        (op.add_diagonal(torch.arange(A.shape[-1], dtype=DT)), A + torch.diag(torch.arange(A.shape[-1], dtype=DT))),
        (op @ DenseOperator(A), A @ A),
        (sum([op, op]), 2 * A),
    ]
    for got, want in pairs:
        assert isinstance(got, Operator), type(got)
        assert_close(_dense(got), want)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_detach_and_casts(case):
    t, op, A = _build(case, requires_grad=True)
    assert op.requires_grad
    d = op.detach()
    assert not d.requires_grad
    assert_close(d.to_dense(), A.detach())
    f = op.float()
    assert f.dtype == torch.float32
    assert_close(f.to_dense(), A.detach().float())
    assert op.double().dtype == DT
    assert op.to(torch.float32).dtype == torch.float32


@pytest.mark.parametrize("case", SPD_CASES, ids=SPD_IDS)
def test_solve_and_logdet(case):
    _, op, A = _build(case)
    g = torch.Generator().manual_seed(2)
    n = A.shape[-1]
    R = torch.randn(A.shape[0], n, 3, generator=g, dtype=DT)
    L = torch.randn(A.shape[0], 4, n, generator=g, dtype=DT)
    X = torch.linalg.solve(A, R)
    assert_close(op.solve(R), X)
    assert_close(op.solve(R[..., 0][0]), torch.linalg.solve(A, R[..., 0][0]))
    assert_close(op.solve(R, L), L @ X)
    assert_close(op.inv_matmul(R, L), L @ X)
    quad, ld = op.inv_quad_logdet(R, logdet=True)
    assert_close(quad, (R * X).sum((-2, -1)))
    assert_close(ld, torch.logdet(A))
    assert_close(op.inv_quad(R, reduce_inv_quad=False), (R * X).sum(-2))
    assert_close(op.logdet(), torch.logdet(A))
    assert op.inv_quad_logdet() == (None, None)
    assert op.inv_quad_logdet(logdet=True)[0] is None
    assert_close(op.cholesky().to_dense(), torch.linalg.cholesky(A))
    root = op.root_decomposition()
    assert_close(root.to_dense(), A)
    assert_close(root.root.to_dense() @ root.root.to_dense().mT, A)
    assert_close(op.root_inv_decomposition().to_dense(), torch.linalg.inv(A))
    evals, evecs = torch.linalg.eigh(A)
    inv_sqrt = evecs @ torch.diag_embed(evals.rsqrt()) @ evecs.mT
    assert_close(op.sqrt_inv_matmul(R), inv_sqrt @ R)
    out, q = op.sqrt_inv_matmul(R, L)
    assert_close(out, L @ inv_sqrt @ R)
    assert_close(q, (L @ torch.linalg.inv(A) * L).sum(-1))
    assert op.evaluate_kernel().shape == op.shape


@pytest.mark.parametrize("case", SPD_CASES, ids=SPD_IDS)
def test_gradients_equal_finite_differences(case):
    t = case.tensors(3, requires_grad=True)
    n = case.dense(*[x.detach() for x in t]).shape[-1]
    g = torch.Generator().manual_seed(4)
    V = torch.randn(2, n, 2, generator=g, dtype=DT)

    def f(*tensors):
        op = case.make(*tensors)
        quad, ld = op.inv_quad_logdet(V, logdet=True)
        return (
            op.matmul(V),
            op.diagonal(),
            op.solve(V),
            quad,
            ld,
            op.sum(dim=0).matmul(V[0]),
            op.prod(dim=0).diagonal(),
            op[..., 1:4, 1:4].to_dense(),
            op[1].matmul(V[1]),
            op[..., torch.tensor([0, 2]), torch.tensor([1, 3])],
        )

    assert torch.autograd.gradcheck(f, tuple(t), eps=1e-6, atol=1e-6, fast_mode=True)


@pytest.mark.parametrize("case", SPD_CASES, ids=SPD_IDS)
def test_gradients_equal_the_dense_computation(case):
    t = case.tensors(5, requires_grad=True)
    n = case.dense(*[x.detach() for x in t]).shape[-1]
    V = torch.randn(2, n, 2, generator=torch.Generator().manual_seed(6), dtype=DT)
    op = case.make(*t)
    q, ld = op.inv_quad_logdet(V, logdet=True)
    (q + ld).sum().backward()
    got = [x.grad.clone() for x in t]
    t2 = [x.detach().clone().requires_grad_(True) for x in t]
    A = case.dense(*t2)
    (torch.logdet(A) + (V * torch.linalg.solve(A, V)).sum((-2, -1))).sum().backward()
    for a, b in zip(got, t2):
        assert_close(a, b.grad)


def test_kernel_indexing_evaluates_only_what_is_asked(monkeypatch):
    from torchgp.kernels import RBFKernel
    from torchgp.linalg.operators import KernelOperator

    k = RBFKernel().double()
    X = torch.randn(2, 9, 2, generator=torch.Generator().manual_seed(7), dtype=DT)
    op = KernelOperator(k, X, X)
    A = op.to_dense()
    rows, cols = torch.tensor([0, 4, 8]), torch.tensor([3, 3, 1])

    def refuse(self):
        raise AssertionError("the whole kernel matrix was formed")

    monkeypatch.setattr(KernelOperator, "_dense", refuse)
    assert_close(op[..., 2, :], A[..., 2, :])
    assert_close(op[..., :, 5], A[..., :, 5])
    assert_close(op[1, 2, 3], A[1, 2, 3])
    assert_close(op[..., rows, cols], A[..., rows, cols])
    assert_close(op[..., rows, 1:4], A[..., rows, 1:4])
    sub = op[..., 2:6, 0:3]
    assert isinstance(sub, KernelOperator) and sub.shape == (2, 4, 3)
    assert isinstance(op[0], KernelOperator) and isinstance(op.mT, KernelOperator)
    assert isinstance(op.expand(3, 2, 9, 9), KernelOperator)
    assert_close(op.diagonal(), A.diagonal(dim1=-2, dim2=-1))
