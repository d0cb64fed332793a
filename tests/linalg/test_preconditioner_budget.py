"""The preconditioner's rank is capped, with a warning, where its factor would take more than half the device's memory."""

from __future__ import annotations

import warnings

import pytest
import torch

import torchgp
from torchgp.errors import NumericalWarning
from torchgp.linalg import AddedDiagOperator, KernelOperator, iterative_system
from torchgp.linalg.iterative import _System

N = 300


def _system(batch=()):
    X = torch.rand(N, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    kernel = torchgp.kernels.RBFKernel(batch_shape=torch.Size(batch)).double()
    kernel.lengthscale = 0.3
    noise = torch.full((*batch, N), 0.01, dtype=torch.float64)
    return _System(AddedDiagOperator(KernelOperator(kernel, X, X), noise))


def _build(system, budget, monkeypatch):
    monkeypatch.setattr(iterative_system, "device_memory_budget", lambda device: budget)
    with torchgp.settings.min_preconditioning_size(100):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            P = system.preconditioner()
    return P, [w for w in caught if issubclass(w.category, NumericalWarning)]


@pytest.mark.parametrize("batch", [(), (3,)])
def test_rank_capped_to_the_budget_with_a_warning(batch, monkeypatch):
    system = _system(batch)
    members = 3 if batch else 1
    P_full, quiet = _build(system, 2**40, monkeypatch)
    assert not quiet and P_full.rank > 40  # the unconstrained factor has more columns than the budget below allows
    per_column = 2 * members * N * 8  # the factor and, while probes are drawn, a second array of its size
    P, caught = _build(system, 40 * per_column + 7, monkeypatch)
    assert P.rank == 40
    assert len(caught) == 1 and "capped at 40" in str(caught[0].message) and "half the memory" in str(caught[0].message)
    # The capped factor is the unconstrained one's leading columns: the greedy pivots do not depend on the rank.
    torch.testing.assert_close(P.L, P_full.L[..., :40], rtol=0, atol=1e-12)


def test_reused_pivots_are_cut_to_the_budget(monkeypatch):
    system = _system()
    P_full, _ = _build(system, 2**40, monkeypatch)
    monkeypatch.setattr(iterative_system, "device_memory_budget", lambda device: 25 * 2 * N * 8)
    with torchgp.settings.min_preconditioning_size(100):
        with pytest.warns(NumericalWarning, match="capped at 25"):
            P = system.preconditioner(pivots=P_full.pivots)
    assert torch.equal(P.pivots, P_full.pivots[..., :25])


def test_the_budget_is_half_the_machine():
    import os

    assert iterative_system.device_memory_budget("cpu") == int(
        os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") * 0.5
    )
