"""Monte Carlo acquisition functions: agreement with analytic forms and brute-force sampling, smoothness."""

import math

import pytest
import torch

from torchgp.bo import (
    ExpectedImprovement,
    UpperConfidenceBound,
    qExpectedImprovement,
    qLogExpectedImprovement,
    qUpperConfidenceBound,
)
from torchgp.bo.monte_carlo import sobol_normal_samples
from torchgp.errors import ShapeError


def _candidates(b, q, seed=1):
    return torch.rand(b, q, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_sobol_base_samples_are_standard_normal_and_fixed():
    eps = sobol_normal_samples(4096, 3, seed=5)
    assert eps.shape == (4096, 3) and torch.all(torch.isfinite(eps))
    assert eps.mean(0).abs().max() < 0.01 and (eps.std(0) - 1).abs().max() < 0.01
    torch.testing.assert_close(eps, sobol_normal_samples(4096, 3, seed=5), rtol=0, atol=0)
    assert not torch.equal(eps, sobol_normal_samples(4096, 3, seed=6))


@pytest.mark.parametrize("maximize", [True, False])
def test_qei_with_q1_approaches_analytic_ei(gp, maximize):
    X = _candidates(16, 1)
    best_f = 0.2 if maximize else -0.2
    ei = ExpectedImprovement(gp, best_f, maximize=maximize)(X)
    qei = qExpectedImprovement(gp, best_f, maximize=maximize, num_samples=4096)(X)
    keep = ei > 1e-3  # relative error is meaningful where EI is not negligible
    assert keep.sum() >= 5
    torch.testing.assert_close(qei[keep], ei[keep], rtol=0.02, atol=0)
    assert (qei[~keep] - ei[~keep]).abs().max() < 1e-3


def test_qucb_with_q1_equals_analytic_ucb(gp):
    # E|ξ - μ| = σ √(2/π), so qUCB(q=1) = μ + √β σ up to quasi-MC error.
    X = _candidates(16, 1)
    ucb = UpperConfidenceBound(gp, 3.0)(X)
    qucb = qUpperConfidenceBound(gp, 3.0, num_samples=4096)(X)
    torch.testing.assert_close(qucb, ucb, rtol=0, atol=2e-3 * ucb.abs().max().item())


def test_qei_q2_matches_brute_force_sampling(gp):
    X = _candidates(4, 2, seed=3)
    best_f = -0.55
    qei = qExpectedImprovement(gp, best_f, num_samples=2048)(X)
    assert torch.all(qei > 1e-2)
    with torch.no_grad():
        for i in range(4):
            post = gp(X[i])
            f = torch.distributions.MultivariateNormal(post.mean, post.covariance_matrix).sample((400_000,))
            ref = (f - best_f).clamp_min(0).amax(-1)
            se = ref.std() / math.sqrt(ref.numel())
            assert abs(qei[i] - ref.mean()) < 5 * se + 2e-3 * ref.mean()
    # Joint improvement of two points is at least that of either one alone.
    ei = ExpectedImprovement(gp, best_f)(X.reshape(8, 1, 2)).reshape(4, 2)
    assert torch.all(qei >= ei.amax(-1) * (1 - 0.02))


def test_qlogei_approaches_log_qei_at_low_temperature(gp):
    X = _candidates(8, 2)
    best_f = 0.2
    qei = qExpectedImprovement(gp, best_f, num_samples=256)(X)
    assert torch.all(qei > 1e-4)
    cold = qLogExpectedImprovement(gp, best_f, num_samples=256, tau_max=1e-4, tau_relu=1e-8)(X)
    torch.testing.assert_close(cold, qei.log(), rtol=1e-3, atol=1e-3)
    warm = qLogExpectedImprovement(gp, best_f, num_samples=256)(X)  # default temperatures: close, smoothed
    assert torch.all((warm - qei.log()).abs() < 0.05)
    assert torch.all(warm >= qei.log() - 1e-8)  # both smoothings only add mass


def test_qlogei_finite_in_the_tail_where_qei_is_zero(gp):
    X = _candidates(3, 2).requires_grad_(True)
    best_f = 30.0  # every sample is ≥ 25 posterior standard deviations short of it
    assert torch.all(qExpectedImprovement(gp, best_f, num_samples=128)(X) == 0)
    val = qLogExpectedImprovement(gp, best_f, num_samples=128)(X)
    assert torch.all(torch.isfinite(val))
    (grad,) = torch.autograd.grad(val.sum(), X)
    assert torch.all(torch.isfinite(grad)) and grad.abs().max() > 1.0


@pytest.mark.parametrize(
    "make",
    [
        lambda m: qExpectedImprovement(m, 0.2, num_samples=64),
        lambda m: qLogExpectedImprovement(m, 0.2, num_samples=64),
        lambda m: qLogExpectedImprovement(m, 0.2, maximize=False, num_samples=64),
        lambda m: qUpperConfidenceBound(m, 2.0, num_samples=64),
    ],
)
def test_mc_deterministic_and_gradcheck(gp, make):
    acqf = make(gp)
    X = _candidates(3, 2).requires_grad_(True)
    torch.testing.assert_close(acqf(X), acqf(X), rtol=0, atol=0)
    assert acqf(X).shape == (3,)
    assert torch.autograd.gradcheck(acqf, (X,), eps=1e-6, atol=1e-6, rtol=1e-4)


def test_mc_batch_equals_loop_and_q_chunking(gp, monkeypatch):
    acqf = qLogExpectedImprovement(gp, 0.2, num_samples=64)
    X = _candidates(6, 3)
    out = acqf(X)
    loop = torch.stack([acqf(X[i]) for i in range(6)])
    torch.testing.assert_close(out, loop)
    import torchgp.bo.acquisition as acq

    monkeypatch.setattr(acq, "_MAX_JOINT_POINTS", 6)  # two batches per model call
    torch.testing.assert_close(acqf(X), out)


def test_mc_errors(gp):
    with pytest.raises(ShapeError, match="trained on d = 2"):
        qExpectedImprovement(gp, 0.0)(torch.rand(2, 2, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match="num_samples"):
        qExpectedImprovement(gp, 0.0, num_samples=0)
    with pytest.raises(ValueError, match="tau_max"):
        qLogExpectedImprovement(gp, 0.0, tau_max=0.0)
