"""``linalg.inv_quad_logdet`` (Cholesky path): values and the analytic backward."""

from __future__ import annotations

import warnings

import pytest
import torch

from tests._tol import assert_close
from torchgp import settings
from torchgp.errors import NotPSDError, NumericalWarning, ShapeError
from torchgp.linalg import inv_quad_logdet, psd_safe_cholesky, solve


def _spd(*batch, n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(*batch, n, n, generator=g, dtype=torch.float64)
    return A, A @ A.mT + n * torch.eye(n, dtype=torch.float64)


def _reference(K, rhs):
    """Plain autograd through ``torch.linalg.cholesky``."""
    L = torch.linalg.cholesky(K)
    alpha = torch.cholesky_solve(rhs, L)
    return (rhs * alpha).sum((-2, -1)), 2 * L.diagonal(dim1=-2, dim2=-1).log().sum(-1)


@pytest.mark.parametrize("batch, k", [((), 1), ((), 3), ((2,), 1), ((2, 3), 4)])
def test_values_and_backward_match_autograd_through_cholesky(batch, k):
    A, _ = _spd(*batch)
    g = torch.Generator().manual_seed(1)
    rhs = torch.randn(*batch, 6, k, generator=g, dtype=torch.float64)
    wq = torch.randn(batch, generator=g, dtype=torch.float64)
    wl = torch.randn(batch, generator=g, dtype=torch.float64)
    grads = []
    for fn in (lambda K, r: inv_quad_logdet(K, r), _reference):
        A_ = A.clone().requires_grad_(True)
        r_ = rhs.clone().requires_grad_(True)
        K = A_ @ A_.mT + 6 * torch.eye(6, dtype=torch.float64)
        quad, logdet = fn(K, r_)
        ((wq * quad).sum() + (wl * logdet).sum()).backward()
        grads.append((quad.detach(), logdet.detach(), A_.grad, r_.grad))
    for ours, ref in zip(*grads):
        assert_close(ours, ref)


def test_gradcheck_float64():
    A, _ = _spd(2, n=5)
    rhs = torch.randn(2, 5, 3, dtype=torch.float64)

    def f(A, r):
        return inv_quad_logdet(A @ A.mT + 5 * torch.eye(5, dtype=torch.float64), r)

    assert torch.autograd.gradcheck(f, (A.requires_grad_(True), rhs.requires_grad_(True)))


def test_only_one_output_used():
    A, K = _spd()
    rhs = torch.randn(6, 2, dtype=torch.float64)
    for idx in (0, 1):
        A_ = A.clone().requires_grad_(True)
        A_r = A.clone().requires_grad_(True)
        inv_quad_logdet(A_ @ A_.mT + 6 * torch.eye(6, dtype=torch.float64), rhs)[idx].backward()
        _reference(A_r @ A_r.mT + 6 * torch.eye(6, dtype=torch.float64), rhs)[idx].backward()
        assert_close(A_.grad, A_r.grad)


def test_vector_rhs_and_logdet_only():
    _, K = _spd()
    r = torch.randn(6, dtype=torch.float64)
    quad, logdet = inv_quad_logdet(K, r)
    assert_close(quad, r @ torch.linalg.solve(K, r))
    assert_close(logdet, torch.linalg.slogdet(K)[1])
    quad0, logdet0 = inv_quad_logdet(K)
    assert_close(quad0, torch.zeros(()))
    assert_close(logdet0, logdet)
    assert inv_quad_logdet(K, r, logdet=False)[1] is None


def test_shape_errors():
    _, K = _spd()
    with pytest.raises(ShapeError, match="rhs has 5 rows"):
        inv_quad_logdet(K, torch.randn(5, 1, dtype=torch.float64))
    with pytest.raises(ShapeError, match="square"):
        inv_quad_logdet(torch.randn(4, 3, dtype=torch.float64))


def test_solve_matches_torch():
    _, K = _spd(3)
    B = torch.randn(3, 6, 2, dtype=torch.float64)
    assert_close(solve(K, B), torch.linalg.solve(K, B))


def test_solve_dtype_mixed_precision():
    _, K = _spd()
    r = torch.randn(6, 1, dtype=torch.float64)
    with settings.solve_dtype(torch.float64):
        quad, logdet = inv_quad_logdet(K.float(), r.float())
    assert quad.dtype == torch.float32
    assert_close(quad, inv_quad_logdet(K, r)[0].float())


# ------------------------------------------------------------------ psd_safe_cholesky
def test_cholesky_jitter_escalates_with_a_warning_saying_how_much():
    X = torch.randn(8, 2, dtype=torch.float64)
    A = X @ X.mT  # rank 2: singular
    with pytest.warns(NumericalWarning, match=r"added jitter .*e-0\d .*of its mean diagonal"):
        L = psd_safe_cholesky(A)
    added = (L @ L.mT - A).diagonal()
    assert torch.all(added > 0)
    assert_close(L @ L.mT - torch.diag_embed(added), A)
    with settings.cholesky_jitter(1e-3):
        with pytest.warns(NumericalWarning, match="1e-03"):
            psd_safe_cholesky(A)


def test_cholesky_gives_up_with_diagnosis():
    A = torch.diag(torch.tensor([1.0, -1.0, 2.0], dtype=torch.float64))
    with pytest.raises(NotPSDError, match="indefinite.*smallest eigenvalue -1"):
        psd_safe_cholesky(A)
    with pytest.raises(NotPSDError, match="NaN or inf"):
        psd_safe_cholesky(torch.full((3, 3), float("nan"), dtype=torch.float64))
    X = torch.randn(8, 2, dtype=torch.float64)
    with settings.cholesky_max_tries(1), settings.cholesky_jitter(1e-30):
        with pytest.raises(NotPSDError, match="singular.*duplicate.*float64"):
            psd_safe_cholesky(X @ X.mT)


def test_cholesky_no_warning_when_fine(recwarn):
    _, K = _spd(2)
    assert_close(psd_safe_cholesky(K), torch.linalg.cholesky(K))
    assert not [w for w in recwarn if issubclass(w.category, NumericalWarning)]


def test_solve_dtype_runs_the_factorisation_in_float64_for_float32_kernels():
    from torchgp import settings
    from torchgp.linalg import inv_quad_logdet

    gen = torch.Generator().manual_seed(0)
    X = torch.rand(300, 1, generator=gen, dtype=torch.float64)
    K64 = torch.exp(-0.5 * (X - X.mT).square() / 0.5**2) + 1e-5 * torch.eye(300, dtype=torch.float64)
    r64 = torch.randn(300, generator=gen, dtype=torch.float64)
    K32 = K64.float().requires_grad_()
    # the reference is the float32 matrix's own log-determinant, in float64: rounding K to float32 is not the solve's
    _, l_ref = inv_quad_logdet(K32.detach().double(), r64.float().double())
    with settings.solve_dtype(torch.float64):
        q_mixed, l_mixed = inv_quad_logdet(K32, r64.float())
    assert q_mixed.dtype == l_mixed.dtype == torch.float32  # results follow the inputs' dtype
    err_mixed = abs(l_mixed.double() - l_ref) / abs(l_ref)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # float32 may need jitter here
        _, l_32 = inv_quad_logdet(K64.float(), r64.float())
    err_32 = abs(l_32.double() - l_ref) / abs(l_ref)
    assert err_mixed < err_32  # the float64 solve removes the float32 factorisation error
    (q_mixed + l_mixed).backward()
    assert K32.grad.dtype == torch.float32 and torch.all(torch.isfinite(K32.grad))
