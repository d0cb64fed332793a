"""GPyTorch's settings of the iterative path, each changing what it changes in GPyTorch.

skip_logdet_forward, terminate_cg_by_size, tridiagonal_jitter, min_preconditioning_size, preconditioner_tolerance,
verbose_linalg.
"""

from __future__ import annotations

import logging
import warnings

import pytest
import torch

import torchgp
import torchgp.linalg.iterative as iterative
from tests._tol import assert_close
from tests.linalg.test_iterative import _problem
from torchgp import settings
from torchgp.errors import ConvergenceWarning
from torchgp.linalg import warm_start
from torchgp.linalg.cg import pcg
from torchgp.linalg.lanczos import jitter_tridiagonal, lanczos_quadrature
from torchgp.linalg.operators import AddedDiagOperator, KernelOperator
from torchgp.linalg.pivoted_cholesky import build_preconditioner, pivoted_cholesky


def _gp(lib, X, y):
    """The same exact GP written against torchgp or GPyTorch."""

    class Model(lib.models.ExactGP):
        def __init__(self):
            super().__init__(X, y, lib.likelihoods.GaussianLikelihood())
            self.mean_module = lib.means.ConstantMean()
            self.covar_module = lib.kernels.ScaleKernel(lib.kernels.RBFKernel())

        def forward(self, x):
            return lib.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))

    model = Model().double()
    model.initialize(**{"covar_module.base_kernel.lengthscale": 0.3, "likelihood.noise": 0.05})
    model.train()
    return model, lib.mlls.ExactMarginalLogLikelihood(model.likelihood, model)


def _loss_and_grads(model, mll, X, y):
    model.zero_grad()
    loss = -mll(model(X), y)
    loss.backward()
    return loss.detach(), torch.cat([p.grad.reshape(-1) for p in model.parameters()])


def _data(n=80, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.rand(n, 2, generator=g, dtype=torch.float64)
    return X, torch.sin(4 * X[:, 0]) + 0.1 * torch.randn(n, generator=g, dtype=torch.float64)


def _half_logdet_per_n(model, X):
    """½ log|K + σ²I| / n in closed form (dense Cholesky), the term the setting drops from -MLL/n."""
    with torch.no_grad():
        K = model.covar_module(X).to_dense() + model.likelihood.noise * torch.eye(X.shape[0], dtype=X.dtype)
        return torch.linalg.cholesky(K).diagonal().log().sum() / X.shape[0]


@pytest.mark.parametrize("path", ["cholesky", "iterative"])
def test_skip_logdet_forward_drops_the_value_keeps_the_gradient(path):
    X, y = _data()
    model, mll = _gp(torchgp, X, y)
    with settings.max_cholesky_size(4096 if path == "cholesky" else 0):
        full, g_full = _loss_and_grads(model, mll, X, y)
        with settings.skip_logdet_forward():
            skip, g_skip = _loss_and_grads(model, mll, X, y)
    # Under the setting -MLL/n = ½(rᵀK⁻¹r + n log 2π)/n exactly: the closed-form full loss minus ½ log|K| / n.
    exact_full, _ = _loss_and_grads(model, mll, X, y)  # Cholesky (n = 80 ≤ max_cholesky_size)
    expected = exact_full - _half_logdet_per_n(model, X)
    # Iterative: the quadratic term to the CG tolerance (1e-4 relative residual), not the log-determinant's SLQ error.
    assert_close(skip, expected, loose=1 if path == "cholesky" else 1e4)
    # and the full loss (SLQ on the iterative path, measured 3e-6 off here) is the skipped one plus that term.
    assert_close(full - skip, _half_logdet_per_n(model, X), loose=1 if path == "cholesky" else 1e3)
    # The gradient is the full loss's: bit for bit the same computation on either path (same probes).
    assert_close(g_skip, g_full)


def test_skip_logdet_forward_gradient_is_gpytorchs():
    X, y = _data()
    ours, ours_mll = _gp(torchgp, X, y)
    import gpytorch

    theirs, theirs_mll = _gp(gpytorch, X, y)
    with settings.skip_logdet_forward():
        loss, g = _loss_and_grads(ours, ours_mll, X, y)
    with gpytorch.settings.skip_logdet_forward():  # GPyTorch's Cholesky path keeps the value: compare gradients
        g_loss, g_gp = _loss_and_grads(theirs, theirs_mll, X, y)
    assert_close(g, g_gp, loose=100)
    assert_close(loss, g_loss - _half_logdet_per_n(ours, X), loose=100)


def test_skip_logdet_forward_iterative_gradient_matches_exact():
    X, y = _data(200, seed=3)
    model, mll = _gp(torchgp, X, y)
    exact_loss, exact = _loss_and_grads(model, mll, X, y)
    with settings.max_cholesky_size(0), settings.skip_logdet_forward(), settings.num_trace_samples(64):
        _, g = _loss_and_grads(model, mll, X, y)
    # Hutchinson's estimate of tr(K⁻¹∂K) with the preconditioner's control variate: measured 2e-3 relative here.
    torch.testing.assert_close(g, exact, rtol=2e-2, atol=2e-2 * exact.abs().max().item())


class _Columns:
    """Wraps iterative.pcg to note the number of right-hand sides and Lanczos recording of each call."""

    def __init__(self, monkeypatch):
        self.calls = []
        inner = iterative.pcg

        def wrapped(matmul, B, *args, **kwargs):
            self.calls.append((B.shape[-1], bool(kwargs.get("record", False))))
            return inner(matmul, B, *args, **kwargs)

        monkeypatch.setattr(iterative, "pcg", wrapped)


def _op_loss_grads(X, y, kernel, raw_noise):
    op = AddedDiagOperator(KernelOperator(kernel, X, X), raw_noise.exp().expand(X.shape[0]))
    quad, logdet = iterative.iterative_inv_quad_logdet(
        op, y.unsqueeze(-1), logdet_value=not settings.skip_logdet_forward.on()
    )
    loss = 0.5 * (quad + logdet)
    return loss.detach(), logdet.detach(), torch.stack(torch.autograd.grad(loss, [*kernel.parameters(), raw_noise]))


def test_skip_logdet_with_warm_start_runs_only_warm_columns(monkeypatch):
    columns = _Columns(monkeypatch)
    X, y, kernel, raw_noise = _problem(150, noise=0.05, seed=2)
    warm_start.cache.clear()
    t = 8
    with settings.num_trace_samples(t), settings.cg_tolerance(1e-8), settings.cg_warm_start():
        _op_loss_grads(X, y, kernel, raw_noise)  # cold, fills the cache
        with torch.no_grad():
            raw_noise.add_(0.01)
        warm_full = _op_loss_grads(X, y, kernel, raw_noise)
        with settings.skip_logdet_forward():
            warm_skip = _op_loss_grads(X, y, kernel, raw_noise)
    warm_start.cache.clear()
    # Full warm step: [r, z] warm plus t cold probe copies for the quadrature; skipped: [r, z] only, no recording.
    assert columns.calls == [(1 + t, True), (1 + 2 * t, True), (1 + t, False)]
    assert float(warm_skip[1]) == 0.0 and float(warm_full[1]) != 0.0
    assert_close(warm_skip[0], warm_full[0] - 0.5 * warm_full[1], loose=1e3)  # quadratic terms to CG tol 1e-8
    assert_close(warm_skip[2], warm_full[2], loose=1e3)  # the same probes, solved to 1e-8 in both


def test_terminate_cg_by_size_caps_iterations_at_n():
    g = torch.Generator().manual_seed(0)
    Q, _ = torch.linalg.qr(torch.randn(12, 12, generator=g, dtype=torch.float64))
    A = Q @ torch.diag(torch.logspace(0, 8, 12, dtype=torch.float64)) @ Q.T  # cond 1e8: round-off needs > n steps
    B = torch.randn(12, 1, generator=g, dtype=torch.float64)
    X, info = pcg(lambda V: A @ V, B, tol=1e-12)
    assert info.iterations > 12 and bool(info.converged.all())
    assert_close(X, torch.linalg.solve(A, B), loose=1e2)
    with settings.terminate_cg_by_size(), pytest.warns(ConvergenceWarning, match="after 12 iterations"):
        _, capped = pcg(lambda V: A @ V, B, tol=1e-12)
    assert capped.iterations == 12 and not bool(capped.converged.any())
    with settings.terminate_cg_by_size(), warnings.catch_warnings():  # an explicit cap below n is kept
        warnings.simplefilter("ignore", ConvergenceWarning)
        _, five = pcg(lambda V: A @ V, B, tol=1e-12, max_iter=5)
    assert five.iterations == 5


def test_tridiagonal_jitter_is_relative_to_the_smallest_diagonal():
    g = torch.Generator().manual_seed(1)
    m = 6
    diag = 1 + torch.rand(2, m, generator=g, dtype=torch.float64)
    off = 0.3 * torch.rand(2, m - 1, generator=g, dtype=torch.float64)
    T = torch.diag_embed(diag) + torch.diag_embed(off, 1) + torch.diag_embed(off, -1)  # (2, m, m)
    eye = torch.eye(m, dtype=torch.float64)
    for jitter in (1e-6, 0.25):  # GPyTorch: T + jitter · min_j T_jj · I per matrix
        with settings.tridiagonal_jitter(jitter):
            assert_close(jitter_tridiagonal(T), T + (jitter * diag.amin(-1))[:, None, None] * eye)
    assert_close(jitter_tridiagonal(T), T + 1e-6 * diag.amin(-1)[:, None, None] * eye)  # the default 1e-6
    # Not in the log-determinant's quadrature (GPyTorch's SLQ has none either): there it would only add bias.
    norm2 = torch.tensor([3.0, 5.0], dtype=torch.float64)
    evals, evecs = torch.linalg.eigh(T)
    plain = norm2 * (evecs[..., 0, :].square() * evals.log()).sum(-1)
    with settings.tridiagonal_jitter(0.25):
        assert_close(lanczos_quadrature(T, norm2), plain)


def test_min_preconditioning_size_switches_the_preconditioner_off():
    X, y, kernel, raw_noise = _problem(120, noise=0.01, lengthscale=0.3, seed=4)
    op = AddedDiagOperator(KernelOperator(kernel, X, X), raw_noise.exp().detach().expand(120))
    system = iterative._System(op)
    assert system.preconditioner().rank > 0  # torchgp's default 0: a preconditioner at every n
    with settings.min_preconditioning_size(121):
        off = system.preconditioner()
    with settings.min_preconditioning_size(120):
        on = system.preconditioner()
    assert off.rank == 0 and on.rank > 0
    assert_close(off.D, raw_noise.exp().detach().expand(120))  # P = σ²I: CG unpreconditioned up to a scale
    B = y.detach().unsqueeze(-1)
    _, plain = pcg(system.matmul_fn(), B, off.solve, tol=1e-8)
    _, pre = pcg(system.matmul_fn(), B, on.solve, tol=1e-8)
    assert plain.iterations > 3 * pre.iterations, (plain.iterations, pre.iterations)


def test_preconditioner_tolerance_is_gpytorchs_rule():
    import linear_operator

    g = torch.Generator().manual_seed(5)
    X = torch.rand(300, 2, generator=g, dtype=torch.float64)
    K = torch.exp(-0.5 * torch.cdist(X, X).square() / 0.4**2)
    kernel = _problem(10, lengthscale=0.4)[2]  # RBF, ℓ = 0.4, outputscale 1
    op = KernelOperator(kernel, X, X)
    assert_close(op.to_dense(), K)
    for tolerance in (1e-1, 1e-3, 1e-5):
        with settings.preconditioner_tolerance(tolerance):
            P = build_preconditioner(op, None, rank=200)
        with linear_operator.settings.preconditioner_tolerance(tolerance):
            L_gp = linear_operator.to_linear_operator(K).pivoted_cholesky(rank=200)
        assert P.rank == L_gp.shape[-1], (tolerance, P.rank, L_gp.shape[-1])
        # The first rank whose residual trace, relative to max_i K_ii = 1, is at most the tolerance.
        L = pivoted_cholesky(op, P.rank)
        assert float(K.diagonal().sum() - L.square().sum()) <= tolerance
        L_less = pivoted_cholesky(op, P.rank - 1)
        assert float(K.diagonal().sum() - L_less.square().sum()) > tolerance


def test_verbose_linalg_logs_solver_choice_cholesky_and_cg(caplog):
    X, y = _data(40)
    model, mll = _gp(torchgp, X, y)
    caplog.set_level(logging.DEBUG, logger="torchgp.linalg")
    _loss_and_grads(model, mll, X, y)
    assert not [r for r in caplog.records if r.name == "torchgp.linalg"]  # off by default: no records
    with settings.verbose_linalg():
        _loss_and_grads(model, mll, X, y)
        with settings.max_cholesky_size(0):
            _loss_and_grads(model, mll, X, y)
    messages = [r.getMessage() for r in caplog.records if r.name == "torchgp.linalg"]
    assert all(r.levelno == logging.DEBUG for r in caplog.records if r.name == "torchgp.linalg")
    assert any(m.startswith("solver: cholesky") and "(40, 40)" in m for m in messages), messages
    assert any(m.startswith("Cholesky of the marginal likelihood's (40, 40)") for m in messages), messages
    assert any(m.startswith("solver: iterative") for m in messages), messages
    assert any(m.startswith("CG: 33 right-hand sides of a 40 x 40 system") for m in messages), messages
    assert any(m.startswith("CG:") and "iterations, worst relative residual" in m for m in messages), messages
    assert any(m.startswith("pivoted Cholesky") for m in messages) and any(m.startswith("Lanczos") for m in messages)
    assert settings.verbose_linalg.logger is logging.getLogger("torchgp.linalg")


def test_nystrom_preconditioner_full_rank_inverts_and_low_rank_is_spd():
    from torchgp.linalg.nystrom_preconditioner import NystromPreconditioner

    X, _, kernel, _ = _problem(60, lengthscale=0.3, seed=8)
    K = kernel.evaluate_block(X, X).detach()
    mu = 0.01
    A = K + mu * torch.eye(60, dtype=torch.float64)
    V = torch.randn(60, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    noise = torch.full((60,), mu, dtype=torch.float64)
    full = NystromPreconditioner(lambda W: K @ W, (), 60, 60, noise, torch.float64, None)
    # Rank n: K̂ = K, so P⁻¹ = (λ̂_n + μ)(K + μI)⁻¹ (FTU 2023, eq. (5.3)), a multiple of the exact inverse.
    c = float(full.lam[-1] + mu)
    assert_close(full.solve(A @ V), c * V, loose=1e4)
    low = NystromPreconditioner(lambda W: K @ W, (), 60, 10, noise, torch.float64, None)
    Pinv = low.solve(torch.eye(60, dtype=torch.float64))
    assert_close(Pinv, Pinv.mT)
    assert float(torch.linalg.eigvalsh(Pinv).min()) > 0
    # It preconditions: P⁻¹A has a far smaller condition number than A.
    ev = torch.linalg.eigvals(Pinv @ A).real
    assert float(ev.max() / ev.min()) < 0.1 * float(torch.linalg.cond(A))


def test_default_preconditioner_gives_solves_below_the_size_a_nystrom_preconditioner():
    from torchgp import beta_features
    from torchgp.linalg.nystrom_preconditioner import NystromPreconditioner

    X, y, kernel, raw_noise = _problem(150, noise=0.01, lengthscale=0.3, seed=9)
    op = AddedDiagOperator(KernelOperator(kernel, X, X), raw_noise.exp().detach().expand(150))
    B = y.detach().unsqueeze(-1)
    counts = []
    inner = iterative.pcg

    def counting(*args, **kwargs):
        X_, info = inner(*args, **kwargs)
        counts.append(info.iterations)
        return X_, info

    iterative.pcg = counting
    try:
        with settings.min_preconditioning_size(1000), settings.max_preconditioner_size(40):
            plain = iterative.iterative_solve(op, B)
            with beta_features.default_preconditioner():
                assert isinstance(iterative._System(op).solve_preconditioner(), NystromPreconditioner)
                nystrom = iterative.iterative_solve(op, B)
        with beta_features.default_preconditioner():  # above the size: the pivoted Cholesky as always
            assert not isinstance(iterative._System(op).solve_preconditioner(), NystromPreconditioner)
    finally:
        iterative.pcg = inner
    exact = torch.linalg.solve(op.to_dense().detach(), B)
    for x in (plain, nystrom):  # CG to eval_cg_tolerance 1e-6 on a system of condition ~1e4
        assert float((x.detach() - exact).norm() / exact.norm()) < 1e-6 * 1e3
    assert counts[1] < 0.5 * counts[0], counts
