"""Toeplitz (FFT), Kronecker-of-Toeplitz and interpolated ``W K_UU Wᵀ`` operators against dense matrices."""

from __future__ import annotations

import pytest
import torch

from tests._tol import assert_close
from torchgp.linalg.interpolated import InterpolatedOperator, grid_entries
from torchgp.linalg.toeplitz import ToeplitzOperator, kronecker_toeplitz
from torchgp.utils.interpolation import Interpolation

D64 = torch.float64
TIGHT = 0.01  # 1e-10 in float64


def _column(m, ell=0.2, batch=()):
    u = torch.linspace(0, 1, m, dtype=D64)
    ell = torch.as_tensor(ell, dtype=D64).reshape(*batch, 1) if batch else torch.tensor(ell, dtype=D64)
    return torch.exp(-0.5 * ((u - u[0]) / ell) ** 2)


def _dense_toeplitz(c):
    m = c.shape[-1]
    i = torch.arange(m)
    return c[..., (i[:, None] - i[None, :]).abs()]


@pytest.mark.parametrize("m", [5, 97, 200])
def test_toeplitz_fft_matmul_equals_dense(m):
    c = _column(m, ell=torch.tensor([0.1, 0.3]), batch=(2,))
    T = ToeplitzOperator(c)
    dense = _dense_toeplitz(c)
    assert_close(T.to_dense(), dense)
    V = torch.randn(m, 3, dtype=D64)
    assert_close(T @ V, dense @ V, loose=TIGHT)
    assert_close(T.diagonal(), dense.diagonal(dim1=-2, dim2=-1))
    assert_close((T * 2.0) @ V, 2 * dense @ V, loose=TIGHT)
    assert_close(T[1] @ V, dense[1] @ V, loose=TIGHT)


def test_toeplitz_matmul_gradcheck_through_fft():
    c = _column(70).requires_grad_(True)  # m > 64: the FFT path
    V = torch.randn(70, 2, dtype=D64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda c, V: ToeplitzOperator(c).matmul(V), (c, V))


def test_kronecker_of_toeplitz_matmul_equals_dense():
    cols = [_column(70, 0.2), _column(80, 0.4) * 0.5, _column(3, 0.3)]
    K = kronecker_toeplitz(cols)
    dense = torch.kron(torch.kron(_dense_toeplitz(cols[0]), _dense_toeplitz(cols[1])), _dense_toeplitz(cols[2]))
    V = torch.randn(70 * 80 * 3, 2, dtype=D64)
    assert_close(K @ V, dense @ V, loose=TIGHT)
    rows, cols_ = torch.randint(0, 70 * 80 * 3, (2, 50))
    assert_close(grid_entries(K, rows, cols_), dense[rows, cols_])


def _interp(d, n=40, g=(70, 30), seed=0):
    gen = torch.Generator().manual_seed(seed)
    grids = [torch.linspace(0, 1, g[i], dtype=D64) for i in range(d)]
    x = 0.1 + 0.8 * torch.rand(n, d, generator=gen, dtype=D64)
    idx, val = Interpolation().interpolate(grids, x)
    base = kronecker_toeplitz([_column(g[i], 0.2 + 0.1 * i) for i in range(d)])
    return base, idx, val


def _dense_w(idx, val, m):
    W = torch.zeros(idx.shape[0], m, dtype=val.dtype)
    return W.scatter_add(-1, idx, val)


@pytest.mark.parametrize("d", [1, 2])
def test_interpolated_operator_equals_dense_w_k_wt(d):
    base, idx, val = _interp(d)
    _, idx2, val2 = _interp(d, n=25, seed=1)
    m = base.shape[-1]
    W1, W2, K = _dense_w(idx, val, m), _dense_w(idx2, val2, m), base.to_dense()
    sym = InterpolatedOperator(base, idx, val)
    cross = InterpolatedOperator(base, idx, val, idx2, val2)
    assert_close(sym.to_dense(), W1 @ K @ W1.T, loose=TIGHT)
    assert_close(cross.to_dense(), W1 @ K @ W2.T, loose=TIGHT)
    V = torch.randn(25, 3, dtype=D64)
    assert_close(cross @ V, W1 @ K @ W2.T @ V, loose=TIGHT)
    U = torch.randn(40, 2, dtype=D64)
    assert_close(cross.mT @ U, W2 @ K @ W1.T @ U, loose=TIGHT)
    assert_close(sym.diagonal(), (W1 @ K @ W1.T).diagonal(), loose=TIGHT)
    assert_close(sym[3:9, 2:5].to_dense(), (W1 @ K @ W1.T)[3:9, 2:5], loose=TIGHT)


def test_interpolated_operator_gradients_equal_dense():
    base, idx, val = _interp(1)
    c = _column(70, 0.25).requires_grad_(True)
    v = val.clone().requires_grad_(True)
    R = torch.randn(40, 2, dtype=D64)

    def fast(c, v):
        return InterpolatedOperator(ToeplitzOperator(c), idx, v).matmul(R)

    def dense(c, v):
        W = torch.zeros(40, 70, dtype=D64).scatter_add(-1, idx, v)
        return W @ _dense_toeplitz(c) @ W.T @ R

    assert_close(fast(c, v), dense(c, v), loose=TIGHT)
    assert torch.autograd.gradcheck(fast, (c, v))


def test_dense_rows_of_a_large_grid_operator_come_from_products_not_from_k_uu():
    g = torch.linspace(0, 1, 500, dtype=D64)
    c = torch.exp(-0.5 * ((g - g[0]) / 0.1) ** 2)
    x, z = torch.rand(30, 1, dtype=D64), torch.rand(20, 1, dtype=D64)
    (i1, v1), (i2, v2) = Interpolation().interpolate([g], x), Interpolation().interpolate([g], z)
    W1, W2 = _dense_w(i1, v1, 500), _dense_w(i2, v2, 500)
    op = InterpolatedOperator(ToeplitzOperator(c), i1, v1, i2, v2)  # m² = 250000 > n1 n2: the product route
    assert_close(op.to_dense(), W1 @ _dense_toeplitz(c) @ W2.T, loose=TIGHT)
    assert_close(op.mT.to_dense(), W2 @ _dense_toeplitz(c) @ W1.T, loose=TIGHT)
