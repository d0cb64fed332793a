"""Blocked structured solves: CG in column blocks, W products in row blocks, a growing pivoted Cholesky —
the same numbers as the dense computation at any block size."""

from __future__ import annotations

import torch

import torchgp
from tests.structured.test_ski import _dense_mll_terms, _ski
from torchgp.linalg import interpolated, solvers, structured_solve, structured_system
from torchgp.linalg.interpolated import interp_matmul, interp_t_matmul
from torchgp.linalg.structured_solve import StructuredFactor, structured_pivoted_cholesky

D64 = torch.float64


def test_column_and_row_blocked_ski_mll_and_gradients_equal_dense(monkeypatch):
    n = 400
    monkeypatch.setattr(structured_system, "_BLOCK_BYTES", n * 8 * 3)  # 3 columns per CG / gradient block
    monkeypatch.setattr(interpolated, "_ROW_BLOCK", 64)  # W products 64 rows at a time
    assert structured_solve._columns_per_block(n) == 3
    model, x, y = _ski(n=n)
    model.train()
    with torchgp.settings.max_cholesky_size(100), torchgp.settings.cg_tolerance(1e-10):
        cov = model.likelihood(model(x)).lazy_covariance_matrix
        factor = solvers.factorize(cov)
        assert isinstance(factor, StructuredFactor)
        quad, logdet = factor.inv_quad_logdet((y - model.mean_module(x)).unsqueeze(-1))
        params = list(model.parameters())
        g_fast = torch.autograd.grad(quad + logdet, params)
    quad_d, logdet_d = _dense_mll_terms(model, x, y)
    g_dense = torch.autograd.grad(quad_d + logdet_d, params)
    torch.testing.assert_close(quad, quad_d, rtol=1e-6, atol=1e-6)
    assert abs((logdet - logdet_d) / logdet_d) < 1e-6
    for a, b in zip(g_fast, g_dense):
        assert torch.allclose(a, b, rtol=1e-6, atol=1e-6 * float(b.abs().max())), (a, b)


def test_interpolation_products_with_and_without_a_graph_equal_the_dense_weights(monkeypatch):
    monkeypatch.setattr(interpolated, "_ROW_BLOCK", 7)
    gen = torch.Generator().manual_seed(0)
    n, m, k = 50, 20, 4
    idx = torch.randint(0, m - k, (n, 1), generator=gen) + torch.arange(k)
    val = torch.rand(n, k, generator=gen, dtype=D64)
    W = torch.zeros(n, m, dtype=D64).scatter_add_(-1, idx, val)
    R = torch.randn(m, 3, generator=gen, dtype=D64, requires_grad=True)
    V = torch.randn(n, 3, generator=gen, dtype=D64, requires_grad=True)
    with torch.no_grad():
        torch.testing.assert_close(interp_matmul(idx, val, R), W @ R, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(interp_t_matmul(idx, val, V, m), W.mT @ V, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(lambda r: interp_matmul(idx, val, r), (R,))
    assert torch.autograd.gradcheck(lambda v: interp_t_matmul(idx, val, v, m), (V,))


def test_growing_pivoted_cholesky_recovers_a_low_rank_operator():
    gen = torch.Generator().manual_seed(3)
    A = torch.randn(60, 13, generator=gen, dtype=D64)
    K = A @ A.mT  # rank 13: more pivots than the first allocation of 8 columns
    L = structured_pivoted_cholesky(torchgp.linalg.operators.DenseOperator(K), rank=40)
    assert L.shape == (60, 13)
    torch.testing.assert_close(L @ L.mT, K, rtol=1e-8, atol=1e-8)
    L5 = structured_pivoted_cholesky(torchgp.linalg.operators.DenseOperator(K), rank=5)
    assert L5.shape == (60, 5)
    assert (K - L5 @ L5.mT).diagonal().min() > -1e-8  # a partial factor never overshoots the diagonal
