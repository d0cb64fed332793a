"""Analytic acquisition functions against closed forms (scipy.stats.norm), mpmath and finite differences."""

import math

import mpmath
import pytest
import torch
from scipy.stats import norm

from torchgp.bo import (
    ExpectedImprovement,
    LogExpectedImprovement,
    LogProbabilityOfImprovement,
    PosteriorMean,
    ProbabilityOfImprovement,
    UpperConfidenceBound,
    log_h,
    ndtr,
    qExpectedImprovement,
)
from torchgp.errors import InputError, ShapeError


def _moments(model, X):
    """Posterior mean and std at X (b, 1, d) as NumPy arrays, straight from the model."""
    with torch.no_grad():
        post = model(X.reshape(-1, X.shape[-1]))
        return post.mean.numpy(), post.variance.sqrt().numpy()  # inside no_grad: the covariance is lazy


def _candidates(b=64):
    return torch.rand(b, 1, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


@pytest.mark.parametrize("maximize", [True, False])
def test_ei_pi_ucb_closed_forms(gp, tol, maximize):
    X = _candidates()
    mu, sigma = _moments(gp, X)
    best_f = 0.3
    u = (mu - best_f) / sigma if maximize else (best_f - mu) / sigma
    ei_ref = sigma * (norm.pdf(u) + u * norm.cdf(u))  # Jones et al. (1998), eq. 15
    t = tol(torch.float64)
    ei = ExpectedImprovement(gp, best_f, maximize=maximize)(X)
    assert ei.shape == (64,)
    torch.testing.assert_close(ei, torch.as_tensor(ei_ref), **t)
    torch.testing.assert_close(ProbabilityOfImprovement(gp, best_f, maximize)(X), torch.as_tensor(norm.cdf(u)), **t)
    torch.testing.assert_close(
        LogProbabilityOfImprovement(gp, best_f, maximize)(X), torch.as_tensor(norm.logcdf(u)), **t
    )
    sign = 1 if maximize else -1
    ucb_ref = sign * mu + math.sqrt(2.5) * sigma
    torch.testing.assert_close(UpperConfidenceBound(gp, 2.5, maximize)(X), torch.as_tensor(ucb_ref), **t)
    torch.testing.assert_close(PosteriorMean(gp, maximize)(X), torch.as_tensor(sign * mu), **t)


def test_logei_equals_log_ei_where_representable(gp, tol):
    X = _candidates()
    for best_f in (-1.0, 0.3, 2.0, 4.0):
        ei = ExpectedImprovement(gp, best_f)(X)
        ok = ei > 1e-250  # far from underflow, where log(EI) is itself accurate
        assert ok.sum() >= 32
        log_ei = LogExpectedImprovement(gp, best_f)(X)
        torch.testing.assert_close(log_ei[ok], ei[ok].log(), rtol=1e-9, atol=1e-12)
        assert torch.all(torch.isfinite(log_ei))


def _log_h_mp(z):
    """log h(z) and d/dz log h = Φ(z)/h(z) in 80-digit arithmetic."""
    with mpmath.workdps(80):
        z = mpmath.mpf(z)
        h = mpmath.npdf(z) + z * mpmath.ncdf(z)
        return float(mpmath.log(h)), float(mpmath.ncdf(z) / h)


@pytest.mark.parametrize(
    "z", [-1e9, -1e4, -408.0, -406.0, -100.0, -40.0, -38.5, -10.0, -1.5, -1.0, -0.999, 0.0, 2.0, 30.0]
)
def test_log_h_matches_high_precision_in_every_branch(z):
    ref, dref = _log_h_mp(z)
    zt = torch.tensor(z, dtype=torch.float64, requires_grad=True)
    val = log_h(zt)
    (grad,) = torch.autograd.grad(val, zt)
    assert math.isfinite(val.item()) and math.isfinite(grad.item())
    assert val.item() == pytest.approx(ref, rel=1e-12, abs=1e-12)
    assert grad.item() == pytest.approx(dref, rel=1e-7)


def test_ndtr_keeps_the_lower_tail():
    z = torch.tensor([-40.0, -20.0, -8.5, -3.0, 0.0, 2.0], dtype=torch.float64)
    torch.testing.assert_close(ndtr(z), torch.as_tensor(norm.cdf(z.numpy())), rtol=1e-13, atol=0)


def test_log_h_is_continuous_at_branch_points():
    for z0 in (-1.0, -(torch.finfo(torch.float64).eps ** (-1 / 6))):
        z = torch.tensor([z0 * (1 - 1e-12), z0 * (1 + 1e-12)], dtype=torch.float64)
        lh = log_h(z)
        assert (lh[0] - lh[1]).abs() <= 1e-9 * lh.abs().max()
        grad = torch.autograd.functional.jacobian(lambda t: log_h(t).sum(), z)
        assert (grad[0] - grad[1]).abs() <= 1e-9 * grad.abs().max()


def test_logei_finite_with_useful_gradient_far_in_the_tail(stub):
    # Stub posterior N(x₀, 1) and best_f = 40 + x₀ at x₀ = 0: z = -40, where EI underflows to 0 in float64.
    X = torch.zeros(1, 1, 2, dtype=torch.float64, requires_grad=True)
    ei = ExpectedImprovement(stub, best_f=40.0)(X)
    assert ei.item() == 0.0
    log_ei = LogExpectedImprovement(stub, best_f=40.0)(X)
    ref, dref = _log_h_mp(-40.0)  # σ = 1: log EI = log h(z), d/dx₀ = d/dz log h
    assert log_ei.item() == pytest.approx(ref, rel=1e-12)
    (grad,) = torch.autograd.grad(log_ei.sum(), X)
    assert grad[0, 0, 0].item() == pytest.approx(dref, rel=1e-7)  # ≈ 40: points towards the improvement
    assert grad[0, 0, 1].item() == 0.0
    # And with a real GP far from the data (σ ≈ 1, μ ≈ mean): finite values and gradients.


def test_logei_tail_on_gp_matches_finite_differences(gp):
    acqf = LogExpectedImprovement(gp, best_f=45.0)  # z ≈ -45 at every candidate
    X = torch.tensor([[[0.8, 0.45]], [[0.2, 0.9]]], dtype=torch.float64, requires_grad=True)
    assert torch.all(ExpectedImprovement(gp, best_f=45.0)(X) == 0)
    val = acqf(X)
    assert torch.all(torch.isfinite(val)) and torch.all(val < -900)
    (grad,) = torch.autograd.grad(val.sum(), X)
    h = 1e-6
    for i in range(2):
        for j in range(2):
            E = torch.zeros_like(X)
            E[i, 0, j] = h
            with torch.no_grad():
                fd = (acqf(X + E)[i] - acqf(X - E)[i]) / (2 * h)
            assert grad[i, 0, j].item() == pytest.approx(fd.item(), rel=1e-5, abs=1e-6)
    assert grad.abs().max() > 1.0  # a useful gradient, where EI's is exactly 0


@pytest.mark.parametrize(
    "make",
    [
        lambda m: ExpectedImprovement(m, 0.3),
        lambda m: LogExpectedImprovement(m, 0.3),
        lambda m: LogExpectedImprovement(m, 3.0, maximize=False),
        lambda m: ProbabilityOfImprovement(m, 0.3),
        lambda m: LogProbabilityOfImprovement(m, 0.3),
        lambda m: UpperConfidenceBound(m, 2.0),
        lambda m: PosteriorMean(m),
    ],
)
def test_gradcheck(gp, make):
    X = _candidates(5).requires_grad_(True)
    assert torch.autograd.gradcheck(make(gp), (X,), eps=1e-6, atol=1e-6, rtol=1e-4)


def test_batch_shapes_and_best_f_broadcast(gp, tol):
    X = torch.rand(3, 4, 1, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    acqf = LogExpectedImprovement(gp, 0.3)
    out = acqf(X)
    assert out.shape == (3, 4)
    loop = torch.stack([torch.stack([acqf(X[i, j]) for j in range(4)]) for i in range(3)]).squeeze(-1)
    torch.testing.assert_close(out, loop, **tol(torch.float64))
    assert acqf(X[0, 0]).shape == ()  # X (1, d) → scalar
    best = torch.tensor([0.0, 0.3, 0.6, 0.9], dtype=torch.float64)
    per_batch = ExpectedImprovement(gp, best)(X)
    for k in range(4):
        torch.testing.assert_close(per_batch[:, k], ExpectedImprovement(gp, best[k].item())(X[:, k]))


def test_errors_speak_the_users_language(gp):
    X = _candidates(4)
    with pytest.raises(ShapeError, match=r"d = 3 .* trained on d = 2"):
        ExpectedImprovement(gp, 0.0)(torch.rand(4, 1, 3, dtype=torch.float64))
    with pytest.raises(ShapeError, match="qExpectedImprovement"):
        ExpectedImprovement(gp, 0.0)(torch.rand(4, 3, 2, dtype=torch.float64))
    with pytest.raises(ShapeError, match="qLogExpectedImprovement"):
        LogExpectedImprovement(gp, 0.0)(torch.rand(3, 2, dtype=torch.float64))
    with pytest.raises(ShapeError, match=r"\(\*batch, q, d\)"):
        PosteriorMean(gp)(torch.rand(2, dtype=torch.float64))
    with pytest.raises(InputError, match="beta"):
        UpperConfidenceBound(gp, -1.0)
    gp.train()
    with pytest.raises(InputError, match=r"model\.eval\(\)"):
        ExpectedImprovement(gp, 0.0)
    gp.eval()
    acqf = ExpectedImprovement(gp, 0.0)
    gp.train()  # switched back after the acquisition function was built
    with pytest.raises(InputError, match=r"model\.eval\(\)"):
        acqf(X)
    with pytest.raises(InputError, match=r"model\.eval\(\)"):
        qExpectedImprovement(gp, 0.0)


def test_likelihood_adds_observation_noise(gp):
    X = _candidates(8)
    ucb = UpperConfidenceBound(gp, 1.0)(X)
    noisy = UpperConfidenceBound(gp, 1.0, likelihood=gp.likelihood)(X)
    mu, sigma = _moments(gp, X)
    noise = gp.likelihood.noise.item()
    torch.testing.assert_close(noisy, torch.as_tensor(mu + (sigma**2 + noise) ** 0.5))
    assert torch.all(noisy > ucb)
