"""Per-column CG tolerances: finished columns stop costing products, the others are unchanged."""

import pytest
import torch

from tests._tol import assert_close
from tests.linalg.test_iterative import _problem
from torchgp import settings
from torchgp.linalg.cg import pcg
from torchgp.linalg.iterative import iterative_inv_quad_logdet, probe_tolerance
from torchgp.linalg.operators import AddedDiagOperator, KernelOperator


def _spd(n, cond, gen):
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
    evals = torch.logspace(0, torch.log10(torch.tensor(cond)).item(), n, dtype=torch.float64)
    return Q @ torch.diag(evals) @ Q.T


class _Counting:
    """``V ↦ A V`` that records how many columns each product had."""

    def __init__(self, A):
        self.A, self.columns = A, []

    def __call__(self, V):
        self.columns.append(V.shape[-1])
        return self.A @ V


@pytest.mark.parametrize("batch", [(), (2,)])
def test_lockstep_columns_equal_separate_solves(batch):
    gen = torch.Generator().manual_seed(0)
    A = _spd(60, 1e2, gen)
    B = torch.randn(*batch, 60, 3, generator=gen, dtype=torch.float64)
    tol = torch.tensor([1e-9, 1e-2, 1e-5], dtype=torch.float64)
    mm = _Counting(A)
    X, info = pcg(mm, B, tol=tol, max_iter=500)
    for j in range(3):  # CG on each column alone with its tolerance: the same iterates, the same stopping step
        Xj, info_j = pcg(lambda V: A @ V, B[..., j : j + 1], tol=float(tol[j]), max_iter=500)
        assert_close(X[..., j : j + 1], Xj, loose=1e3)
        # (the step at which a column crosses its tolerance may move by one with the products' round-off)
        assert bool(((info.num_steps[..., j] - info_j.num_steps[..., 0]).abs() <= 1).all())
    steps = info.num_steps.reshape(-1, 3).amax(0)
    assert steps[1] < steps[2] < steps[0]
    # Once a column has stopped in every batch member it is no longer multiplied.
    assert mm.columns[-1] == 1 and mm.columns[0] == 3
    assert sum(mm.columns) == int(steps.sum())


def test_preconditioner_solves_only_running_columns():
    gen = torch.Generator().manual_seed(1)
    A = _spd(60, 1e3, gen)
    M = torch.linalg.inv(torch.diag(A.diagonal()) + 0.1 * torch.eye(60, dtype=torch.float64))  # a Jacobi-like P⁻¹
    B = torch.randn(2, 60, 3, generator=gen, dtype=torch.float64)
    tol = torch.tensor([1e-9, 1e-2, 1e-5], dtype=torch.float64)
    solves = _Counting(M)
    X, info = pcg(lambda V: A @ V, B, solves, tol=tol, max_iter=500)
    # every column reaches its own tolerance; the tight one equals the exact solution
    rel = torch.linalg.norm(A @ X - B, dim=-2) / torch.linalg.norm(B, dim=-2)
    assert bool((rel <= tol).all()), rel
    assert_close(X[..., 0], torch.linalg.solve(A, B[..., 0:1])[..., 0], loose=1e4)
    # and about the steps of preconditioned CG on the tight column alone (round-off moves the last of ~120)
    X0, info0 = pcg(lambda V: A @ V, B[..., 0:1], lambda V: M @ V, tol=float(tol[0]), max_iter=500)
    assert bool(((info0.num_steps[..., 0] - info.num_steps[..., 0]).abs() <= 3).all())
    steps = info.num_steps.reshape(-1, 3).amax(0)
    # one solve at the start on all columns, then one per iteration on the columns that ran in it
    assert solves.columns[0] == 3 and solves.columns[-1] == 1
    assert sum(solves.columns) == 3 + int(steps.sum())


def test_probe_tolerance_never_tighter_than_cg_tolerance():
    assert probe_tolerance() == pytest.approx(1e-2)  # default: 100 · cg_tolerance (1e-4), capped at 1e-2
    with settings.cg_tolerance(1e-6):
        assert probe_tolerance() == pytest.approx(1e-4)
    with settings.cg_tolerance(0.5):
        assert probe_tolerance() == 0.5
    with settings.cg_tolerance(1e-3):
        assert probe_tolerance() == pytest.approx(1e-2)
        with settings.cg_probe_tolerance(3e-2):
            assert probe_tolerance() == 3e-2
        with settings.cg_probe_tolerance(1e-5):
            assert probe_tolerance() == 1e-3
    with pytest.raises(ValueError, match="cg_probe_tolerance"):
        settings.cg_probe_tolerance(2.0)


def _iterative(X, y, kernel, raw_noise, probe_tol):
    n = X.shape[0]
    op = AddedDiagOperator(KernelOperator(kernel, X, X), raw_noise.exp().expand(n))
    with (
        settings.max_cholesky_size(1),
        settings.cg_probe_tolerance(probe_tol),
        settings.num_trace_samples(16),
        settings.max_preconditioner_size(10),
    ):
        quad, logdet = iterative_inv_quad_logdet(op, y.unsqueeze(-1))
        grads = torch.autograd.grad(-0.5 * (quad + logdet), [*kernel.parameters(), raw_noise])
    return quad.detach(), logdet.detach(), torch.stack(grads)


def test_loose_probe_tolerance_keeps_data_column_and_moves_estimates_by_cg_error_only():
    X, y, kernel, raw_noise = _problem(400, lengthscale=0.2, noise=0.05, seed=2)
    K = kernel.evaluate_block(X, X).detach() + raw_noise.exp().detach() * torch.eye(400, dtype=torch.float64)
    exact_quad = y @ torch.linalg.solve(K, y)
    q0, l0, g0 = _iterative(X, y, kernel, raw_noise, 1e-4)  # probes as tight as the data column
    q1, l1, g1 = _iterative(X, y, kernel, raw_noise, None)  # the default, 1e-2
    # The data column still stops at cg_tolerance (1e-4): its quadratic form is as accurate as before.
    assert abs(q1 - exact_quad) / exact_quad < 1e-6 and abs(q0 - exact_quad) / exact_quad < 1e-6
    # The same probes solved to 1e-2 instead of 1e-4: the estimates move by far less than their own noise
    # (16 probes: several per cent), but they do move (the probes really stopped earlier).
    assert 0 < abs(l1 - l0) / abs(l0) < 1e-3
    rel = (g1 - g0).norm() / g0.norm()
    assert 0 < rel < 5e-3, rel
