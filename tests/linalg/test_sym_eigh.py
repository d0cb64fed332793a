"""``linalg._lapack``: the scipy routes (syevd, syrk) equal torch's eigendecomposition and products."""

import pytest
import torch

from torchgp.linalg import _lapack
from torchgp.linalg._lapack import EIGH_SCIPY_MIN_N, congruence, sym_eigh


def _spd(batch, n, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(*batch, n, n, generator=g, dtype=torch.float64)
    return (A @ A.mT / n + 0.1 * torch.eye(n, dtype=torch.float64)).to(dtype)


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-10), (torch.float32, 1e-4)])
@pytest.mark.parametrize("batch", [(), (2,)])
def test_scipy_route_reconstructs_and_matches_torch(dtype, tol, batch):
    M = _spd(batch, EIGH_SCIPY_MIN_N + 4, dtype)
    lam, Q = sym_eigh(M)
    assert lam.shape == M.shape[:-1] and Q.shape == M.shape and lam.dtype == Q.dtype == dtype
    ref_lam, _ = torch.linalg.eigh(M)
    scale = float(M.abs().max())
    assert torch.allclose(lam, ref_lam, atol=tol * scale, rtol=0)
    assert torch.allclose(Q @ torch.diag_embed(lam) @ Q.mT, M, atol=tol * scale, rtol=0)
    eye = torch.eye(M.shape[-1], dtype=dtype)
    assert torch.allclose(Q.mT @ Q, eye.expand_as(Q), atol=tol * 10, rtol=0)


def test_the_scipy_route_is_taken_only_where_it_applies(monkeypatch):
    calls = []
    real = _lapack.scipy_routine("eigh", torch.float64)
    monkeypatch.setitem(_lapack._ROUTINES, ("eigh", torch.float64), lambda *a, **k: calls.append(1) or real(*a, **k))
    sym_eigh(_spd((), EIGH_SCIPY_MIN_N, torch.float64))
    assert len(calls) == 1
    sym_eigh(_spd((), EIGH_SCIPY_MIN_N - 1, torch.float64))  # small: torch's routine
    M = _spd((), EIGH_SCIPY_MIN_N, torch.float64).requires_grad_(True)
    lam, _ = sym_eigh(M)  # autograd through it: torch's routine, differentiable
    lam.sum().backward()
    assert len(calls) == 1 and torch.allclose(M.grad, torch.eye(M.shape[-1], dtype=torch.float64), atol=1e-8)


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
@pytest.mark.parametrize("sign", [1.0, -1.0, 0.0])
def test_congruence_by_syrk_equals_the_general_product(dtype, tol, sign):
    n = EIGH_SCIPY_MIN_N + 3
    g = torch.Generator().manual_seed(3)
    P = torch.randn(2, n, n, generator=g, dtype=torch.float64).to(dtype)
    v = torch.rand(2, n, generator=g, dtype=torch.float64).to(dtype)
    v = sign * v if sign else v - 0.5  # one sign (syrk), or mixed signs (the general product)
    out = congruence(P, v)
    ref = (P.double() * v.double().unsqueeze(-2)) @ P.double().mT
    assert out.shape == ref.shape and out.dtype == dtype
    assert torch.allclose(out.double(), ref, atol=tol * float(ref.abs().max()), rtol=0)
    if sign:  # the syrk route mirrors one triangle: exactly symmetric
        assert torch.equal(out, out.mT)


def test_scipy_routine_finds_each_routine_once_by_name_and_dtype():
    scipy_linalg = pytest.importorskip("scipy.linalg")
    assert _lapack.scipy_routine("potri", torch.float64) is scipy_linalg.lapack.dpotri
    assert _lapack.scipy_routine("potri", torch.float32) is scipy_linalg.lapack.spotri
    assert _lapack.scipy_routine("syrk", torch.float32) is scipy_linalg.blas.ssyrk
    assert _lapack.scipy_routine("eigh", torch.float32) is scipy_linalg.eigh
    assert _lapack.scipy_routine("potri", torch.float16) is None  # no LAPACK routine: torch's serves
    assert _lapack.scipy_routine("no_such_routine", torch.float64) is None
    assert ("syrk", torch.float32) in _lapack._ROUTINES  # cached
