"""Warm-started CG (Lin et al. 2024): same solutions as cold starts, fewer iterations, a cache that cannot go stale."""

from __future__ import annotations

import pytest
import torch

import torchgp.linalg.iterative as iterative
from tests._tol import tol
from tests.linalg.test_iterative import _problem
from torchgp import settings
from torchgp.linalg import warm_start
from torchgp.linalg.cg import pcg
from torchgp.linalg.operators import AddedDiagOperator, KernelOperator


@pytest.fixture(autouse=True)
def _fresh_cache():
    warm_start.cache.clear()
    with settings.cg_warm_start(True):  # off by default
        yield
    warm_start.cache.clear()


def test_off_by_default_nothing_is_kept():
    X, y, kernel, raw_noise = _problem(100, seed=7)
    with settings.cg_warm_start(False):
        assert not settings.cg_warm_start.on()
        _loss_grads(X, y, kernel, raw_noise)
        _loss_grads(X, y, kernel, raw_noise)
    assert warm_start.cache._entries == [] and warm_start.cache.hits == warm_start.cache.misses == 0


def _spd(n, shift, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.rand(n, 2, generator=g, dtype=torch.float64)
    return torch.exp(-0.5 * torch.cdist(X, X).square() / 0.3**2) + shift * torch.eye(n, dtype=torch.float64)


def test_pcg_warm_start_same_solution_fewer_iterations():
    A1, A2 = _spd(120, 0.05), _spd(120, 0.0505)  # a slightly changed system, as after an optimiser step
    B = torch.randn(120, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    X1, _ = pcg(lambda V: A1 @ V, B, tol=1e-10, max_iter=1000)
    cold, info_cold = pcg(lambda V: A2 @ V, B, tol=1e-6, max_iter=1000)
    warm, info_warm = pcg(lambda V: A2 @ V, B, tol=1e-6, max_iter=1000, x0=X1)
    exact = torch.linalg.solve(A2, B)
    torch.testing.assert_close(cold, exact, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(warm, exact, rtol=1e-4, atol=1e-4)
    assert bool(info_warm.converged.all()) and bool((info_warm.residual <= 1e-6).all())
    assert info_warm.iterations < 0.8 * info_cold.iterations, (info_warm.iterations, info_cold.iterations)
    # The exact solution as a start: converged before the first iteration; a zero right-hand side gives 0.
    _, info = pcg(lambda V: A2 @ V, B, tol=1e-8, x0=exact)
    assert info.iterations == 0
    Bz = torch.cat([B[:, :1], torch.zeros(120, 1, dtype=torch.float64)], -1)
    Xz, _ = pcg(lambda V: A2 @ V, Bz, tol=1e-8, x0=torch.ones(120, 2, dtype=torch.float64))
    assert bool((Xz[:, 1] == 0).all())


def test_pcg_tolerance_per_column():
    A = _spd(100, 0.01)
    B = torch.randn(100, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    X, info = pcg(lambda V: A @ V, B, tol=torch.tensor([1e-10, 1e-2], dtype=torch.float64), max_iter=1000)
    assert info.residual[0] <= 1e-10 and 1e-10 < info.residual[1] <= 1e-2
    assert info.num_steps[1] < info.num_steps[0]


class _Counting:
    """Wraps iterative.pcg to note the iterations of each call."""

    def __init__(self, monkeypatch):
        self.iterations = []
        inner = iterative.pcg

        def wrapped(*args, **kwargs):
            X, info = inner(*args, **kwargs)
            self.iterations.append(info.iterations)
            return X, info

        monkeypatch.setattr(iterative, "pcg", wrapped)


def _loss_grads(X, y, kernel, raw_noise):
    op = AddedDiagOperator(KernelOperator(kernel, X, X), raw_noise.exp().expand(X.shape[0]))
    quad, logdet = iterative.iterative_inv_quad_logdet(op, y.unsqueeze(-1))
    loss = 0.5 * (quad + logdet)
    grads = torch.autograd.grad(loss, [*kernel.parameters(), raw_noise])
    return loss.detach(), torch.stack(grads)


def _step(kernel, raw_noise):
    with torch.no_grad():  # a small optimiser step: every hyperparameter moves by 1 %
        for p in [*kernel.parameters(), raw_noise]:
            p.add_(0.01)


def test_mll_warm_equals_cold_with_fewer_iterations(monkeypatch):
    counter = _Counting(monkeypatch)
    X, y, kernel, raw_noise = _problem(400, noise=0.02, lengthscale=0.2, seed=4)
    with settings.cg_tolerance(1e-4), settings.num_trace_samples(8), settings.max_preconditioner_size(20):
        _loss_grads(X, y, kernel, raw_noise)  # the first call: cold, fills the cache
        assert warm_start.cache.misses == 1 and warm_start.cache.hits == 0
        _step(kernel, raw_noise)
        warm_loss, warm_grads = _loss_grads(X, y, kernel, raw_noise)
        assert warm_start.cache.hits == 1
        with settings.cg_warm_start(False):
            cold_loss, cold_grads = _loss_grads(X, y, kernel, raw_noise)
    assert warm_start.cache.hits == 1  # off: not consulted
    first, warm_its, cold_its = counter.iterations
    assert warm_its < 0.8 * cold_its, counter.iterations
    # The same estimator (same probes): the solves agree to the CG tolerance; the log-determinant's quadrature,
    # cold to √tol, moved the loss by 0.05 (2e-4 relative), 1 % of the estimator's own spread over probe draws
    # (standard deviation 4.8 measured with 10 seeds), hence rtol 1e-3.
    torch.testing.assert_close(warm_loss, cold_loss, rtol=1e-3, atol=0)
    # The gradients' Hutchinson terms use probes drawn through the preconditioner, whose pivots the warm call reuses
    # from the previous step: another draw of the same estimator, so both are compared with the exact gradient.
    exact = _exact_grads(X, y, kernel, raw_noise)
    for g in (warm_grads, cold_grads):
        torch.testing.assert_close(g, exact, rtol=3e-2, atol=3e-2 * exact.abs().max().item())
    torch.testing.assert_close(warm_grads, cold_grads, rtol=2e-2, atol=2e-2 * exact.abs().max().item())


def _exact_grads(X, y, kernel, raw_noise):
    """The gradient of ½(yᵀK⁻¹y + log|K|) by Cholesky and autograd through the dense K (float64)."""
    K = kernel.evaluate_block(X, X) + raw_noise.exp() * torch.eye(X.shape[0], dtype=torch.float64)
    L = torch.linalg.cholesky(K)
    loss = 0.5 * ((torch.cholesky_solve(y.unsqueeze(-1), L).squeeze(-1) * y).sum() + 2 * L.diagonal().log().sum())
    return torch.stack(torch.autograd.grad(loss, [*kernel.parameters(), raw_noise]))


def test_cache_invalidated_by_new_data_or_probe_count():
    X, y, kernel, raw_noise = _problem(150, seed=5)
    with settings.num_trace_samples(4):
        _loss_grads(X, y, kernel, raw_noise)
        _loss_grads(X, y, kernel, raw_noise)
        assert (warm_start.cache.hits, warm_start.cache.misses) == (1, 1)
        X.data[0, 0] += 1e-3  # an in-place change of the training inputs (no version bump through .data)
        _loss_grads(X, y, kernel, raw_noise)
        assert (warm_start.cache.hits, warm_start.cache.misses) == (1, 2)
    with settings.num_trace_samples(5):  # another probe count: another system
        _loss_grads(X, y, kernel, raw_noise)
        assert (warm_start.cache.hits, warm_start.cache.misses) == (1, 3)
    _loss_grads(X[:100], y[:100], kernel, raw_noise)  # another training set size
    assert warm_start.cache.misses == 4
    assert len(warm_start.cache._entries) == warm_start.MAX_ENTRIES


def test_warm_start_result_matches_cholesky():
    X, y, kernel, raw_noise = _problem(300, noise=0.05, seed=6)
    with settings.cg_tolerance(1e-8), settings.num_trace_samples(64):
        _loss_grads(X, y, kernel, raw_noise)
        _step(kernel, raw_noise)
        loss, _ = _loss_grads(X, y, kernel, raw_noise)
    assert warm_start.cache.hits == 1
    n = X.shape[0]
    K = kernel.evaluate_block(X, X).detach() + raw_noise.exp().detach() * torch.eye(n, dtype=torch.float64)
    L = torch.linalg.cholesky(K)
    quad = (torch.cholesky_solve(y.unsqueeze(-1), L).squeeze(-1) * y).sum()
    exact = 0.5 * (quad + 2 * L.diagonal().log().sum())
    # The quadratic term exactly (CG to 1e-8), the log-determinant within its stochastic error.
    assert abs(loss - exact) / abs(exact) < 2e-2, (loss, exact)
    op = AddedDiagOperator(KernelOperator(kernel, X, X), raw_noise.exp().expand(n))
    with settings.cg_tolerance(1e-8):
        q, _ = iterative.iterative_inv_quad_logdet(op, y.unsqueeze(-1), logdet=False)
    torch.testing.assert_close(q.detach(), quad, **tol(torch.float64, loose=1e3))
