"""Batched preconditioned CG: solutions, indefinite matrices, non-convergence."""

import warnings

import pytest
import torch

from torchgp import settings
from torchgp.errors import ConvergenceError, ConvergenceWarning, NotPSDError
from torchgp.linalg.cg import pcg


def _spd(n, batch=(), cond=100.0):
    Q, _ = torch.linalg.qr(torch.randn(*batch, n, n, dtype=torch.float64))
    evals = torch.logspace(0, torch.log10(torch.tensor(cond)).item(), n, dtype=torch.float64)
    return Q @ torch.diag_embed(evals.expand(*batch, n)) @ Q.mT


@pytest.mark.parametrize("batch", [(), (3,)])
def test_pcg_matches_linalg_solve(batch):
    A = _spd(50, batch)
    B = torch.randn(*batch, 50, 4, dtype=torch.float64)
    X, info = pcg(lambda V: A @ V, B, tol=1e-10, max_iter=200)
    torch.testing.assert_close(X, torch.linalg.solve(A, B), rtol=1e-7, atol=1e-9)
    assert bool(info.converged.all())
    assert bool((info.residual <= 1e-10).all())


def test_preconditioner_reduces_iterations():
    A = _spd(80, cond=1e4)
    B = torch.randn(80, 2, dtype=torch.float64)
    L = torch.linalg.cholesky(A + 1e-3 * torch.eye(80, dtype=torch.float64))
    _, plain = pcg(lambda V: A @ V, B, tol=1e-8, max_iter=500)
    X, pre = pcg(lambda V: A @ V, B, lambda V: torch.cholesky_solve(V, L), tol=1e-8, max_iter=500)
    torch.testing.assert_close(X, torch.linalg.solve(A, B), rtol=1e-6, atol=1e-8)
    assert pre.iterations < plain.iterations


def test_zero_rhs_column_is_zero_solution():
    A = _spd(10)
    B = torch.randn(10, 2, dtype=torch.float64)
    B[:, 1] = 0
    X, info = pcg(lambda V: A @ V, B, tol=1e-10)
    assert torch.all(X[:, 1] == 0) and bool(info.converged.all())


def test_indefinite_raises_not_psd():
    A = _spd(20)
    A[0, 0] = -50.0
    with pytest.raises(NotPSDError, match="not positive definite"):
        pcg(lambda V: A @ V, torch.ones(20, 1, dtype=torch.float64), tol=1e-12, max_iter=100)


def test_nonconvergence_warns_and_raises():
    A = _spd(60, cond=1e6)
    B = torch.randn(60, 1, dtype=torch.float64)
    with pytest.warns(ConvergenceWarning, match="3 iterations"):
        pcg(lambda V: A @ V, B, tol=1e-6, max_iter=3)
    with settings.cg_nonconvergence("raise"), pytest.raises(ConvergenceError, match="relative residual"):
        pcg(lambda V: A @ V, B, tol=1e-6, max_iter=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pcg(lambda V: A @ V, B, tol=1e-6, max_iter=500)  # enough iterations: silent


def test_stagnated_columns_stop_early_and_warn(monkeypatch):
    # A column whose best residual has not fallen by 10 % for _STALL iterations is stopped (here forced
    # with a tiny window on a system whose residual rises before it falls) and reported as not converged.
    import torchgp.linalg.cg as cg

    monkeypatch.setattr(cg, "_STALL", 5)
    A = _spd(60, cond=1e6)
    B = torch.randn(60, 1, dtype=torch.float64)
    with pytest.warns(ConvergenceWarning, match="did not converge"):
        _, info = pcg(lambda V: A @ V, B, tol=1e-6, max_iter=500)
    assert info.iterations < 100
    assert not bool(info.converged.any())
