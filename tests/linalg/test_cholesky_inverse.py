"""The inverse from a Cholesky factor: LAPACK's potri route against torch's and a dense inverse."""

from __future__ import annotations

import pytest
import torch

from tests._tol import assert_close
from torchgp.linalg import _lapack, inv_quad_logdet
from torchgp.linalg import cholesky as chol


def _spd(batch, n, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(*batch, n, n, generator=g, dtype=torch.float64)
    return (A @ A.mT / n + 0.5 * torch.eye(n, dtype=torch.float64)).to(dtype)


@pytest.fixture
def potri_calls(monkeypatch):
    """Route matrices from n = 4 through potri and count its calls."""
    monkeypatch.setattr(chol, "POTRI_MIN_N", {torch.float64: 4, torch.float32: 4})
    calls = []
    for dtype in (torch.float32, torch.float64):
        real = _lapack.scipy_routine("potri", dtype)
        if real is None:
            pytest.skip("scipy's LAPACK is not available")

        def counted(*args, _real=real, **kwargs):
            calls.append(1)
            return _real(*args, **kwargs)

        monkeypatch.setitem(_lapack._ROUTINES, ("potri", dtype), counted)
    return calls


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("batch", [(), (2, 3)])
def test_potri_route_matches_dense_inverse(potri_calls, dtype, batch):
    A = _spd(batch, 9, dtype)
    L = torch.linalg.cholesky(A)
    inv = chol.cholesky_inverse(L)
    assert len(potri_calls) == max(1, int(torch.tensor(batch).prod()) if batch else 1)
    assert inv.shape == A.shape and inv.dtype == dtype
    assert torch.equal(inv, inv.mT)  # mirrored exactly
    assert_close(inv, torch.linalg.inv(A.double()), dtype=dtype, loose=10)
    assert_close(inv, torch.cholesky_inverse(L), dtype=dtype)


def test_small_n_and_recorded_inputs_use_torch(potri_calls, monkeypatch):
    A = _spd((), 9, torch.float64)
    L = torch.linalg.cholesky(A).requires_grad_()
    inv = chol.cholesky_inverse(L)  # autograd must differentiate through it: torch's routine
    assert inv.requires_grad and not potri_calls
    assert torch.autograd.gradcheck(lambda M: chol.cholesky_inverse(M.tril()), (L,), fast_mode=True)
    monkeypatch.setattr(chol, "POTRI_MIN_N", {torch.float64: 10, torch.float32: 10})
    chol.cholesky_inverse(L.detach())
    assert not potri_calls


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_mll_gradient_through_potri_matches_plain_autograd(potri_calls, dtype):
    K0 = _spd((2,), 12, torch.float64, seed=1)
    y = torch.randn(2, 12, generator=torch.Generator().manual_seed(2), dtype=torch.float64)

    def grads(use_ours):
        K = K0.to(dtype).requires_grad_()
        noise = torch.full((2, 12), 0.1, dtype=dtype, requires_grad=True)
        r = y.to(dtype).requires_grad_()
        if use_ours:
            quad, logdet = inv_quad_logdet(K + torch.diag_embed(noise), r)
        else:
            L = torch.linalg.cholesky(K + torch.diag_embed(noise))
            quad = (r.unsqueeze(-1) * torch.cholesky_solve(r.unsqueeze(-1), L)).sum((-2, -1))
            logdet = 2 * L.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        (0.3 * quad + 0.7 * logdet).sum().backward()
        return K.grad, noise.grad, r.grad

    ours, ref = grads(True), grads(False)
    assert potri_calls  # the backward went through potri
    assert_close(ours[0], ours[0].mT, dtype=dtype)
    for a, b in zip(ours, ref):
        assert_close(a, b, dtype=dtype, loose=10)


def test_create_graph_keeps_torch_route(potri_calls):
    K = _spd((), 10, torch.float64).requires_grad_()
    quad, logdet = inv_quad_logdet(K, torch.ones(10, dtype=torch.float64))
    (g,) = torch.autograd.grad(logdet, K, create_graph=True)
    assert not potri_calls
    assert_close(g, torch.linalg.inv(K.detach()))
