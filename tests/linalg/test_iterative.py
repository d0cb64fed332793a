"""The iterative path (PCG + SLQ + blockwise backward) against the Cholesky path."""

import pytest
import torch

from torchgp import settings
from torchgp.errors import ConvergenceError, ConvergenceWarning, NotPSDError
from torchgp.linalg.inv_quad_logdet import inv_quad_logdet, solve
from torchgp.linalg.iterative import iterative_inv_quad_logdet, iterative_solve
from torchgp.linalg.operators import AddedDiagOperator, DenseOperator, KernelOperator


class StandInRBF:
    """RBF with an outputscale; ``sign=-1`` makes an invalid (indefinite) kernel."""

    def __init__(self, raw_lengthscale, raw_outputscale, sign=1.0):
        self.raw_lengthscale, self.raw_outputscale, self.sign = raw_lengthscale, raw_outputscale, sign

    def parameters(self):
        return [self.raw_lengthscale, self.raw_outputscale]

    def output_shape(self, x1, x2, **params):
        return torch.Size([*torch.broadcast_shapes(x1.shape[:-2], x2.shape[:-2]), x1.shape[-2], x2.shape[-2]])

    def evaluate_block(self, x1, x2, diag=False, **params):
        ls, os_ = self.raw_lengthscale.exp(), self.raw_outputscale.exp()
        if diag:
            return os_ * torch.ones(x1.shape[:-1], dtype=x1.dtype)
        sq = (x1.unsqueeze(-2) - x2.unsqueeze(-3)).square().sum(-1) if self.sign > 0 else torch.cdist(x1, x2)
        return os_ * torch.exp(-0.5 * sq / ls**2) * (1.0 if self.sign > 0 else -1.0) + (
            0.0 if self.sign > 0 else 2.0 * torch.exp(-sq)
        )


def _problem(n, d=2, noise=0.1, lengthscale=0.3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    X = torch.rand(n, d, generator=gen, dtype=torch.float64)
    y = torch.sin(6 * X[:, 0]) + torch.cos(4 * X[:, 1]) + 0.3 * torch.randn(n, generator=gen, dtype=torch.float64)
    raw_ls = torch.tensor(lengthscale, dtype=torch.float64).log().requires_grad_()
    raw_os = torch.tensor(0.0, dtype=torch.float64, requires_grad=True)
    raw_noise = torch.tensor(noise, dtype=torch.float64).log().requires_grad_()
    return X, y, StandInRBF(raw_ls, raw_os), raw_noise


def _mll_and_grads(X, y, kernel, raw_noise, cholesky: bool):
    n = X.shape[0]
    with settings.max_cholesky_size(10**9 if cholesky else 1):
        op = AddedDiagOperator(KernelOperator(kernel, X, X), raw_noise.exp().expand(n))
        quad, logdet = inv_quad_logdet(op, y)
        mll = -0.5 * (quad + logdet)
        grads = torch.autograd.grad(mll, [*kernel.parameters(), raw_noise])
    return mll.detach(), torch.stack(grads)


def test_mll_and_gradient_match_cholesky_n3000():
    X, y, kernel, raw_noise = _problem(3000)
    mll0, g0 = _mll_and_grads(X, y, kernel, raw_noise, cholesky=True)
    mll1, g1 = _mll_and_grads(X, y, kernel, raw_noise, cholesky=False)
    assert abs((mll1 - mll0) / mll0) < 1e-3
    assert torch.all((g1 - g0).abs() <= 1e-2 * g0.abs()), (g0, g1)


def test_blockwise_path_gradients_match_cholesky():
    # A tiny dense budget forces kernel products block by block in the forward as well as the backward.
    X, y, kernel, raw_noise = _problem(500, lengthscale=0.2, noise=0.05, seed=1)
    mll0, g0 = _mll_and_grads(X, y, kernel, raw_noise, cholesky=True)
    with settings.max_dense_memory(2**16), settings.kernel_block_size(128):
        mll1, g1 = _mll_and_grads(X, y, kernel, raw_noise, cholesky=False)
    assert abs((mll1 - mll0) / mll0) < 1e-3
    assert torch.all((g1 - g0).abs() <= 1e-2 * g0.abs()), (g0, g1)


def test_dense_operator_and_batch():
    gen = torch.Generator().manual_seed(3)
    X = torch.rand(2, 200, 2, generator=gen, dtype=torch.float64)
    K = torch.exp(-0.5 * torch.cdist(X, X).square() / 0.3**2) + 0.1 * torch.eye(200, dtype=torch.float64)
    K.requires_grad_()
    r = torch.randn(2, 200, 2, generator=gen, dtype=torch.float64, requires_grad=True)
    with settings.num_trace_samples(64), settings.cg_tolerance(1e-8):
        q1, l1 = iterative_inv_quad_logdet(DenseOperator(K), r)
    q0 = (r * torch.linalg.solve(K, r)).sum((-2, -1))
    l0 = torch.logdet(K)
    assert q1.shape == l1.shape == (2,)
    torch.testing.assert_close(q1, q0, rtol=1e-6, atol=0)
    torch.testing.assert_close(l1, l0, rtol=1e-2, atol=0)
    g1 = torch.autograd.grad(q1.sum(), r)[0]
    torch.testing.assert_close(g1, 2 * torch.linalg.solve(K, r), rtol=1e-5, atol=1e-6)


def test_solve_matches_cholesky_predictions():
    X, y, kernel, raw_noise = _problem(1500, seed=2)
    Xs = torch.rand(50, 2, dtype=torch.float64)
    op = AddedDiagOperator(KernelOperator(kernel, X, X), raw_noise.exp().expand(1500))
    with settings.max_cholesky_size(10**9):
        mean0 = kernel.evaluate_block(Xs, X) @ solve(op, y.unsqueeze(-1))
    with settings.max_cholesky_size(1):
        mean1 = kernel.evaluate_block(Xs, X) @ solve(op, y.unsqueeze(-1))
    torch.testing.assert_close(mean1, mean0, rtol=1e-3, atol=1e-3 * mean0.abs().max().item())


def test_solve_is_differentiable():
    X, y, kernel, raw_noise = _problem(60, seed=4)
    b = torch.randn(60, 2, dtype=torch.float64, requires_grad=True)
    G = torch.randn(60, 2, dtype=torch.float64)
    leaves = [b, *kernel.parameters(), raw_noise]

    def K():
        return kernel.evaluate_block(X, X) + raw_noise.exp() * torch.eye(60, dtype=torch.float64)

    g0 = torch.autograd.grad((torch.linalg.solve(K(), b) * G).sum(), leaves)
    op = AddedDiagOperator(KernelOperator(kernel, X, X), raw_noise.exp().expand(60))
    with settings.eval_cg_tolerance(1e-10):
        g1 = torch.autograd.grad((iterative_solve(op, b) * G).sum(), leaves)
    for a, c in zip(g1, g0):
        torch.testing.assert_close(a, c, rtol=1e-6, atol=1e-8)


def test_repeated_calls_are_identical():
    X, y, kernel, raw_noise = _problem(400, seed=5)
    a = _mll_and_grads(X, y, kernel, raw_noise, cholesky=False)
    b = _mll_and_grads(X, y, kernel, raw_noise, cholesky=False)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_indefinite_kernel_raises_not_psd():
    X, y, _, _ = _problem(300, seed=6)
    bad = StandInRBF(torch.tensor(-1.0, dtype=torch.float64), torch.tensor(0.0, dtype=torch.float64), sign=-1.0)
    op = AddedDiagOperator(KernelOperator(bad, X, X), torch.full((300,), 1e-3, dtype=torch.float64))
    with settings.max_cholesky_size(1), pytest.raises(NotPSDError, match="not positive definite"):
        inv_quad_logdet(op, y)


def test_nonconvergence_raises_when_asked():
    X, y, kernel, raw_noise = _problem(300, noise=1e-3, lengthscale=0.1, seed=7)
    op = AddedDiagOperator(KernelOperator(kernel, X, X), raw_noise.exp().expand(300).detach())
    with settings.max_preconditioner_size(0), settings.max_cg_iterations(3):
        with settings.cg_nonconvergence("raise"), pytest.raises(ConvergenceError, match="3 iterations"):
            iterative_inv_quad_logdet(op, y.unsqueeze(-1))
        with pytest.warns(ConvergenceWarning, match="did not converge"):
            iterative_inv_quad_logdet(op, y.unsqueeze(-1))


def test_preconditioner_rank_grows_with_n_up_to_the_cap():
    from torchgp.linalg.iterative import preconditioner_rank

    assert preconditioner_rank(100) == 200
    assert preconditioner_rank(500) == 283
    assert preconditioner_rank(4000) == 800  # ⌈√(160 · 4000)⌉
    assert preconditioner_rank(100_000) == 4000
    assert preconditioner_rank(400_000) == 4000  # the cap, settings.max_preconditioner_size
    with settings.max_preconditioner_size(50):
        assert preconditioner_rank(100_000) == 50
    with settings.max_preconditioner_size(0):
        assert preconditioner_rank(100_000) == 0


def test_truncated_control_variate_keeps_gradients_accurate(monkeypatch):
    # The control variate uses only the leading _CONTROL_RANK columns of the preconditioner's Woodbury
    # factor (the inverse of a lower-rank pivoted-Cholesky preconditioner): still unbiased, still accurate.
    import torchgp.linalg.iterative as iterative

    monkeypatch.setattr(iterative, "_CONTROL_RANK", 60)
    X, y, kernel, raw_noise = _problem(500, lengthscale=0.2, noise=0.05, seed=1)
    mll0, g0 = _mll_and_grads(X, y, kernel, raw_noise, cholesky=True)
    with settings.max_dense_memory(2**16), settings.kernel_block_size(128):
        mll1, g1 = _mll_and_grads(X, y, kernel, raw_noise, cholesky=False)
    assert abs((mll1 - mll0) / mll0) < 1e-3
    assert torch.all((g1 - g0).abs() <= 2e-2 * g0.abs()), (g0, g1)


def test_float32_blockwise_path_matches_float64_cholesky():
    # float32 kernel tiles with float64 CG recurrences (the default on the blockwise path).
    X, y, kernel, raw_noise = _problem(500, lengthscale=0.2, noise=0.05, seed=1)
    mll0, g0 = _mll_and_grads(X, y, kernel, raw_noise, cholesky=True)
    X32, y32 = X.float(), y.float()
    k32 = StandInRBF(
        kernel.raw_lengthscale.detach().float().requires_grad_(),
        kernel.raw_outputscale.detach().float().requires_grad_(),
    )
    rn32 = raw_noise.detach().float().requires_grad_()
    with settings.max_dense_memory(2**16), settings.kernel_block_size(128):
        mll1, g1 = _mll_and_grads(X32, y32, k32, rn32, cholesky=False)
    assert mll1.dtype == torch.float32
    assert abs((mll1.double() - mll0) / mll0) < 2e-3
    assert torch.all((g1.double() - g0).abs() <= 2e-2 * g0.abs()), (g0, g1)
