"""``K_1 ⊗ K_2 + S_1 ⊗ S_2`` solved by per-factor eigendecompositions equals the dense computation."""

from __future__ import annotations

import pytest
import torch

from tests._tol import assert_close
from torchgp.linalg.kronecker_solve import KroneckerEig, KroneckerSum, kronecker_inv_quad_logdet

D = torch.float64


def _spd(n, rank=None, seed=0, batch=()):
    g = torch.Generator().manual_seed(seed)
    r = n if rank is None else rank
    R = torch.randn(*batch, n, r, generator=g, dtype=D)
    return R @ R.mT + (1e-1 if rank is None else 0.0) * torch.eye(n, dtype=D)


def _dense_S(S, diag, n):
    if S is None:
        return torch.eye(n, dtype=D)
    return torch.diag_embed(S) if diag else S


def _dense_value(K1, K2, S1, S2, d1, d2, y):
    A = torch.kron(K1, K2) + torch.kron(_dense_S(S1, d1, K1.shape[-1]), _dense_S(S2, d2, K2.shape[-1]))
    L = torch.linalg.cholesky(A)
    alpha = torch.cholesky_solve(y, L)
    return (y * alpha).sum(), 2 * L.diagonal().log().sum()


NOISES = {
    "global": lambda p, q: (None, True, torch.full((q,), 0.3, dtype=D), True),
    "per_task": lambda p, q: (None, True, torch.linspace(0.1, 0.9, q, dtype=D), True),
    "rank_task": lambda p, q: (None, True, _spd(q, seed=5) * 0.2, False),
    "both_diag": lambda p, q: (torch.linspace(0.5, 1.5, p, dtype=D), True, torch.linspace(0.1, 0.9, q, dtype=D), True),
}


@pytest.mark.parametrize("method", ["eig", "chol"])
@pytest.mark.parametrize("noise", list(NOISES))
def test_value_and_gradients_match_dense(noise, method):
    p, q = 6, 3
    K1, K2 = _spd(p, seed=1), _spd(q, rank=1, seed=2)  # a rank-1 task factor: repeated eigenvalues
    S1, d1, S2, d2 = NOISES[noise](p, q)
    y = torch.randn(p * q, 2, generator=torch.Generator().manual_seed(3), dtype=D)
    leaves = [x.clone().requires_grad_(True) if x is not None else None for x in (K1, K2, S1, S2, y)]
    quad, ld = kronecker_inv_quad_logdet(KroneckerSum(*leaves[:4], d1, d2), leaves[4], method=method)
    (0.7 * quad + 1.3 * ld).backward()
    dense_leaves = [x.clone().requires_grad_(True) if x is not None else None for x in (K1, K2, S1, S2, y)]
    dq, dl = _dense_value(*dense_leaves[:4], d1, d2, dense_leaves[4])
    (0.7 * dq + 1.3 * dl).backward()
    assert_close(quad, dq)
    assert_close(ld, dl)
    for a, b in zip(leaves, dense_leaves):
        if a is not None:
            assert_close(a.grad, b.grad)


@pytest.mark.parametrize("method", ["eig", "chol"])
@pytest.mark.parametrize("small_first", [False, True])
def test_gradcheck_all_parts(method, small_first):
    p, q = (2, 3) if small_first else (3, 2)
    K1, K2 = _spd(p, seed=1), _spd(q, seed=2)
    S2 = _spd(q, seed=4) * 0.3
    S1 = torch.linspace(0.5, 1.0, p, dtype=D)
    y = torch.randn(p * q, 1, generator=torch.Generator().manual_seed(3), dtype=D)

    def f(K1, K2, S1, S2, y):
        sym = [(K1 + K1.mT) / 2, (K2 + K2.mT) / 2]
        parts = KroneckerSum(*sym, S1, (S2 + S2.mT) / 2, True, False)
        quad, ld = kronecker_inv_quad_logdet(parts, y, method=method)
        return quad, ld

    inputs = [x.clone().requires_grad_(True) for x in (K1, K2, S1, S2, y)]
    assert torch.autograd.gradcheck(f, inputs)


@pytest.mark.parametrize("method", ["eig", "chol"])
def test_batched_matches_loop(method):
    p, q = 5, 2
    K1 = _spd(p, seed=1, batch=(3,)) + torch.eye(p, dtype=D)
    K2 = _spd(q, seed=2)
    S2 = torch.tensor([0.2, 0.4], dtype=D)
    y = torch.randn(3, p * q, 1, generator=torch.Generator().manual_seed(3), dtype=D)
    quad, ld = kronecker_inv_quad_logdet(KroneckerSum(K1, K2, None, S2), y, method=method)
    for b in range(3):
        dq, dl = _dense_value(K1[b], K2, None, S2, True, True, y[b])
        assert_close(quad[b], dq)
        assert_close(ld[b], dl)


def test_eig_solve_matches_dense():
    p, q = 5, 3
    K1, K2, S2 = _spd(p, seed=1), _spd(q, seed=2), _spd(q, seed=6)
    parts = KroneckerSum(K1, K2, None, S2, True, False)
    A = torch.kron(K1, K2) + torch.kron(torch.eye(p, dtype=D), S2)
    b = torch.randn(p * q, 4, generator=torch.Generator().manual_seed(0), dtype=D)
    assert_close(KroneckerEig(parts).solve(b), torch.linalg.solve(A, b))
