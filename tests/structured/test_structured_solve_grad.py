"""``StructuredFactor.solve`` (CG through a structured operator's products): values and gradients vs dense."""

from __future__ import annotations

import torch

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
