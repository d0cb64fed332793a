"""The LAPACK routes of the Cholesky path: potrf in place, potri with the gradient's scaling and update folded in."""

from __future__ import annotations

import warnings

import pytest
import torch

from tests._tol import assert_close
from tests.linalg.test_cholesky_inverse import _spd
from torchgp.errors import NotPSDError, NumericalWarning
from torchgp.linalg import _lapack, inv_quad_logdet
from torchgp.linalg import cholesky as chol

DTYPES = [torch.float64, torch.float32]


@pytest.fixture
def lapack_calls(monkeypatch):
    """Send matrices from n = 4 through potrf and potri, in block rows of 4, and count each routine's calls."""
    monkeypatch.setattr(chol, "POTRF_MIN_N", {torch.float64: 4, torch.float32: 4})
    monkeypatch.setattr(chol, "POTRI_MIN_N", {torch.float64: 4, torch.float32: 4})
    monkeypatch.setattr(chol, "_BLOCK", 4)
    calls = {"potrf": 0, "potri": 0}
    for name in calls:
        for dtype in DTYPES:
            real = _lapack.scipy_routine(name, dtype)
            if real is None:
                pytest.skip("scipy's LAPACK is not available")

            def counted(*args, _real=real, _name=name, **kwargs):
                calls[_name] += 1
                return _real(*args, **kwargs)

            monkeypatch.setitem(_lapack._ROUTINES, (name, dtype), counted)
    return calls


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", [(), (2, 3)])
def test_potrf_route_matches_torch(lapack_calls, dtype, batch):
    A = _spd(batch, 11, dtype)
    before = A.clone()
    L = chol.psd_safe_cholesky(A)
    assert lapack_calls["potrf"] == (6 if batch else 1)
    assert torch.equal(A, before)  # the input is not the buffer
    assert torch.equal(L, L.tril())  # the upper triangle is zero
    assert_close(L, torch.linalg.cholesky(A), dtype=dtype, loose=10)


def test_potrf_route_reads_the_lower_triangle_of_any_layout(lapack_calls):
    A = _spd((), 9, torch.float64)
    skewed = A.tril() + 5.0 * A.triu(1)  # upper triangle wrong: only the lower one may be read
    ref = torch.linalg.cholesky(skewed)
    for M in (skewed, skewed.mT.contiguous().mT, skewed.unsqueeze(0).expand(3, 9, 9)):
        assert_close(chol.psd_safe_cholesky(M), ref.expand(M.shape))
    assert lapack_calls["potrf"] == 1 + 1 + 3


def test_potrf_route_below_threshold_and_with_autograd_is_torch(lapack_calls, monkeypatch):
    A = _spd((), 6, torch.float64).requires_grad_()
    L = chol.psd_safe_cholesky(A)  # autograd through the factorisation: torch's routine
    assert L.requires_grad and lapack_calls["potrf"] == 0
    assert torch.autograd.gradcheck(lambda M: chol.psd_safe_cholesky(M @ M.mT + torch.eye(6, dtype=M.dtype)), (A,))
    monkeypatch.setattr(chol, "POTRF_MIN_N", {torch.float64: 7, torch.float32: 7})
    chol.psd_safe_cholesky(A.detach())
    assert lapack_calls["potrf"] == 0


@pytest.mark.parametrize("dtype", DTYPES)
def test_plus_diag_leaves_k_untouched_and_matches(lapack_calls, dtype):
    K = _spd((2,), 8, dtype) - 0.4 * torch.eye(8, dtype=dtype)
    d = torch.linspace(0.1, 0.9, 8, dtype=dtype)
    before = K.clone()
    L = chol.psd_safe_cholesky_plus_diag(K, d)
    assert torch.equal(K, before) and lapack_calls["potrf"] == 2
    assert_close(L, torch.linalg.cholesky(K + torch.diag_embed(d)), dtype=dtype, loose=10)
    assert_close(chol.psd_safe_cholesky_plus_diag(K[0]), torch.linalg.cholesky(K[0]), dtype=dtype, loose=10)


def test_jitter_escalation_on_the_lapack_route(lapack_calls):
    g = torch.Generator().manual_seed(3)
    R = torch.randn(10, 3, generator=g, dtype=torch.float64)
    K = R @ R.mT  # rank 3: not positive definite
    with pytest.warns(NumericalWarning, match="added jitter"):
        L = chol.psd_safe_cholesky_plus_diag(K, torch.zeros(10, dtype=torch.float64))
    assert lapack_calls["potrf"] >= 2  # the failed first try, then at least one retry
    jitter = ((L @ L.mT) - K).diagonal()
    assert torch.all(jitter > 0)
    assert_close(L @ L.mT - torch.diag(jitter), K)  # only the diagonal moved
    bad = K - 2.0 * torch.eye(10, dtype=torch.float64)  # indefinite
    with pytest.raises(NotPSDError, match="indefinite"):
        chol.psd_safe_cholesky(bad, max_tries=2)


@pytest.mark.parametrize("dtype", DTYPES)
def test_cholesky_solve_matches_torch_in_both_layouts(dtype):
    A = _spd((3,), 7, dtype)
    L = torch.linalg.cholesky(A)  # column-major
    rhs = torch.randn(3, 7, 2, dtype=dtype)
    ref = torch.cholesky_solve(rhs, L)
    for factor in (L, L.contiguous()):
        assert_close(chol.cholesky_solve(rhs, factor), ref, dtype=dtype)
    wide = torch.cholesky_solve(rhs[0].expand(3, 7, 2), L)
    assert_close(chol.cholesky_solve(rhs[0], L), wide, dtype=dtype)  # batch dims broadcast


def test_cholesky_solve_gradcheck():
    A = _spd((2,), 5, torch.float64)
    L = torch.linalg.cholesky(A).requires_grad_()
    rhs = torch.randn(2, 5, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda M, r: chol.cholesky_solve(r, M.tril()), (L, rhs))


def _dense_target(A, scale, V, weight):
    out = torch.linalg.inv(A.double())
    if scale is not None:
        out = out * scale.double()[..., None, None]
    if V is not None:
        w = 1.0 if weight is None else weight.double()[..., None, None]
        out = out + w * V.double() @ V.double().mT
    return out


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch, k", [((), 1), ((2,), 3), ((2, 2), 1)])
@pytest.mark.parametrize("n", [4, 9, 13])  # one block, a partial last block, several blocks
def test_inverse_plus_outer_matches_dense(lapack_calls, dtype, batch, k, n):
    A = _spd(batch, n, dtype, seed=n)
    g = torch.Generator().manual_seed(1)
    V = torch.randn(*batch, n, k, generator=g, dtype=torch.float64).to(dtype)
    scale = (torch.rand(batch, generator=g, dtype=torch.float64) - 1.5).to(dtype)
    weight = (torch.rand(batch, generator=g, dtype=torch.float64) + 0.5).to(dtype)
    L_col = torch.linalg.cholesky(A)  # torch's factor, column-major
    L_row = chol.psd_safe_cholesky(A)  # potrf's, row-major
    assert L_col.stride(-2) == 1 and L_row.is_contiguous()
    members = int(torch.tensor(batch).prod()) if batch else 1
    for L in (L_col, L_row, L_row.mT.contiguous().mT.clone()):
        for args in ((None, None, None), (scale, None, None), (scale, V, weight), (None, V, None)):
            calls = lapack_calls["potri"]
            out = chol.cholesky_inverse_plus_outer(L, *args)
            assert lapack_calls["potri"] == calls + members
            assert out.shape == A.shape and out.dtype == dtype and out.is_contiguous()
            assert torch.equal(out, out.mT)  # exactly symmetric
            assert_close(out, _dense_target(A, *args), dtype=dtype, loose=100)
            with pytest.MonkeyPatch.context() as mp:  # torch's route gives the same
                mp.setattr(chol, "POTRI_MIN_N", {})
                assert_close(out, chol.cholesky_inverse_plus_outer(L, *args), dtype=dtype, loose=10)


def test_inverse_ignores_what_is_above_the_diagonal(lapack_calls):
    A = _spd((), 10, torch.float64)
    L = torch.linalg.cholesky(A).contiguous()
    L_dirty = L + torch.full_like(L, float("nan")).triu(1)
    assert_close(chol.cholesky_inverse(L_dirty), torch.linalg.inv(A))
    assert torch.all(torch.isfinite(chol.cholesky_inverse_plus_outer(L_dirty, torch.tensor(-0.5), L[:, :2])))


def test_inverse_broadcasts_the_update_over_the_factor(lapack_calls):
    A = _spd((), 8, torch.float64)
    V = torch.randn(3, 8, 2, dtype=torch.float64)
    out = chol.cholesky_inverse_plus_outer(chol.psd_safe_cholesky(A), torch.tensor(2.0, dtype=torch.float64), V)
    assert out.shape == (3, 8, 8)
    assert_close(out, 2 * torch.linalg.inv(A) + V @ V.mT)


def _rbf(X, ls):
    return torch.exp(-0.5 * (X - X.mT).square() / ls.square())  # exp's backward reads its saved output, K itself


@pytest.mark.parametrize("dtype", DTYPES)
def test_mll_through_both_lapack_routes_matches_plain_autograd(lapack_calls, dtype):
    X = torch.rand(2, 14, 1, generator=torch.Generator().manual_seed(4), dtype=torch.float64).to(dtype)
    y = torch.randn(2, 14, 2, generator=torch.Generator().manual_seed(5), dtype=torch.float64).to(dtype)
    w_logdet = torch.tensor([0.7, -1.1], dtype=dtype)

    def grads(ours):
        ls = torch.tensor(0.4, dtype=dtype, requires_grad=True)
        noise = torch.full((2, 14), 0.1, dtype=dtype, requires_grad=True)
        r = y.clone().requires_grad_()
        K = _rbf(X, ls)
        if ours:
            from torchgp.linalg.inv_quad_logdet import CholeskyInvQuadLogdet

            quad, logdet = CholeskyInvQuadLogdet.apply(K, noise, r)
        else:
            L = torch.linalg.cholesky(K + torch.diag_embed(noise))
            quad = (r * torch.cholesky_solve(r, L)).sum((-2, -1))
            logdet = 2 * L.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        (0.3 * quad + w_logdet * logdet).sum().backward()
        return quad.detach(), logdet.detach(), ls.grad, noise.grad, r.grad

    ours, ref = grads(True), grads(False)
    assert lapack_calls["potrf"] == 2 and lapack_calls["potri"] == 2
    for a, b in zip(ours, ref):
        assert_close(a, b, dtype=dtype, loose=10)


def test_kernel_node_saving_k_survives_the_forward(lapack_calls):
    """K is the output of a node that saved it (as the fused RBF node does): the noise must not be added in place."""
    from torchgp.linalg import AddedDiagOperator, DenseOperator

    X = torch.linspace(0, 1, 12, dtype=torch.float64).unsqueeze(-1)
    y = torch.sin(6 * X).squeeze(-1)
    noise = torch.full((12,), 0.05, dtype=torch.float64)

    def loss(ours):
        ls = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
        K = _rbf(X, ls)
        if ours:  # the operator keeps the noise apart: K itself reaches the Cholesky node
            quad, logdet = inv_quad_logdet(AddedDiagOperator(DenseOperator(K), noise), y)
        else:
            L = torch.linalg.cholesky(K + torch.diag(noise))
            quad = y @ torch.cholesky_solve(y.unsqueeze(-1), L).squeeze(-1)
            logdet = 2 * L.diagonal().log().sum()
        return quad + logdet, K, ls

    (value, K, ls), (ref, _, ls_ref) = loss(True), loss(False)
    snapshot, version = K.detach().clone(), K._version
    (g,) = torch.autograd.grad(value, ls)  # would raise had K been modified in place
    (g_ref,) = torch.autograd.grad(ref, ls_ref)
    assert torch.equal(K.detach(), snapshot) and K._version == version
    assert lapack_calls["potrf"] == 1 and lapack_calls["potri"] == 1
    assert_close(value, ref)
    assert_close(g, g_ref)


def test_gradcheck_through_the_lapack_routes(lapack_calls):
    A = _spd((2,), 6, torch.float64).requires_grad_()
    noise = torch.full((2, 6), 0.2, dtype=torch.float64, requires_grad=True)
    rhs = torch.randn(2, 6, 2, dtype=torch.float64, requires_grad=True)

    def f(A, noise, rhs):
        from torchgp.linalg.inv_quad_logdet import CholeskyInvQuadLogdet

        return CholeskyInvQuadLogdet.apply(A @ A.mT, noise, rhs)

    assert torch.autograd.gradcheck(f, (A, noise, rhs))
    assert lapack_calls["potri"] > 0 and lapack_calls["potrf"] > 0


def test_openblas_threads_restores_the_count():
    import scipy.linalg  # noqa: F401  (loads scipy's OpenBLAS)

    libs = _lapack._find_openblas()
    if not libs:
        pytest.skip("no OpenBLAS visible to threadpoolctl")
    before = [lib.get_num_threads() for lib in libs]
    target = 1 if before[0] != 1 else 2
    with _lapack.openblas_threads(target):
        assert all(lib.get_num_threads() == target for lib in libs)
        with _lapack.openblas_threads(target):  # nested, already there: nothing to change or restore
            pass
        assert all(lib.get_num_threads() == target for lib in libs)
    assert [lib.get_num_threads() for lib in libs] == before


def test_no_warning_on_the_plain_path(lapack_calls):
    A = _spd((), 12, torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        chol.psd_safe_cholesky_plus_diag(A, torch.ones(12, dtype=torch.float64))
