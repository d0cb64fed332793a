"""``StructuredFactor.solve`` (CG through a structured operator's products): values and gradients vs dense."""

from __future__ import annotations

import torch

import torchgp
from torchgp import settings
from torchgp.linalg.operators import AddedDiagOperator
from torchgp.linalg.structured_solve import StructuredFactor
from torchgp.linalg.toeplitz import ToeplitzOperator


def _solve(column, diag, rhs):
    op = AddedDiagOperator(ToeplitzOperator(column), diag)
    with settings.eval_cg_tolerance(1e-12), settings.cg_tolerance(1e-12), settings.max_cg_iterations(200):
        return StructuredFactor(op).solve(rhs)


def _dense(column, diag, rhs):
    m = column.shape[-1]
    idx = (torch.arange(m)[:, None] - torch.arange(m)[None, :]).abs()
    return torch.linalg.solve(column[idx] + torch.diag_embed(diag.expand(m)), rhs)


def test_structured_solve_matches_dense_and_its_gradients_pass_gradcheck():
    m = 12
    grid = torch.arange(m, dtype=torch.float64) * 0.3
    column = torch.exp(-0.5 * grid.square()).requires_grad_(True)  # an RBF kernel on a regular grid: PSD
    diag = torch.full((m,), 0.1, dtype=torch.float64, requires_grad=True)
    rhs = torch.randn(m, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64, requires_grad=True)
    torch.testing.assert_close(_solve(column, diag, rhs), _dense(column, diag, rhs), rtol=1e-8, atol=1e-8)
    torch.autograd.gradcheck(_solve, (column, diag, rhs), eps=1e-6, atol=1e-6, rtol=1e-5)


def test_grid_reduced_bilinear_and_diagonal_forms_equal_the_dense_ones_with_their_gradients():
    from torchgp.linalg.structured_solve import _bilinear, _diag_form

    g = torch.Generator().manual_seed(11)
    n, m = 70, 30
    x = torch.rand(n, 1, generator=g, dtype=torch.float64)
    kern = torchgp.kernels.GridInterpolationKernel(
        torchgp.kernels.ScaleKernel(torchgp.kernels.RBFKernel()), m, num_dims=1, grid_bounds=[(-0.1, 1.1)]
    ).double()
    kern.base_kernel.outputscale = 1.7
    U, V = (torch.randn(n, 3, generator=g, dtype=torch.float64) for _ in range(2))
    w = torch.rand(n, generator=g, dtype=torch.float64)
    params = list(kern.parameters())
    op = kern(x) * 0.5 + kern(x)  # a sum of a scaled and a plain interpolated term
    fast = _bilinear(op, U, V).sum() + _diag_form(op, w).sum()
    K = op.to_dense()
    dense = (U * (K @ V)).sum() + (w * K.diagonal()).sum()
    torch.testing.assert_close(fast, dense, rtol=1e-12, atol=1e-12)
    g_fast = torch.autograd.grad(fast, params, retain_graph=True)  # fast and dense share the grid column
    for a, b in zip(g_fast, torch.autograd.grad(dense, params)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
