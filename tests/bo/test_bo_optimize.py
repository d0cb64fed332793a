"""optimize_acqf against dense grid search; bounds handling; errors."""

import pytest
import torch

from torchgp.bo import (
    ExpectedImprovement,
    LogExpectedImprovement,
    PosteriorMean,
    qLogExpectedImprovement,
)
from torchgp.bo.optimize import optimize_acqf
from torchgp.errors import InputError, ShapeError

CENTRE = torch.tensor([0.3, 0.7], dtype=torch.float64)


@pytest.fixture
def bump_gp(gp_factory):
    """GP conditioned on 20 points of the quadratic bump -‖x - c‖², c = (0.3, 0.7)."""
    X = torch.rand(20, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    y = -((X - CENTRE) ** 2).sum(-1)
    return gp_factory(X, y, lengthscale=0.5, outputscale=1.0, noise=1e-4)


def _grid(bounds, k=201):
    g0 = torch.linspace(bounds[0, 0].item(), bounds[1, 0].item(), k, dtype=torch.float64)
    g1 = torch.linspace(bounds[0, 1].item(), bounds[1, 1].item(), k, dtype=torch.float64)
    return torch.cartesian_prod(g0, g1).reshape(-1, 1, 2)


@pytest.mark.parametrize(
    "bounds",
    [
        [[0.0, 0.0], [1.0, 1.0]],  # interior maximiser near c
        [[0.5, 0.0], [1.0, 0.5]],  # c outside: the maximiser lies on the boundary
    ],
)
def test_finds_grid_maximiser_of_posterior_mean(bump_gp, bounds):
    bounds = torch.tensor(bounds, dtype=torch.float64)
    acqf = PosteriorMean(bump_gp)
    cand, value = optimize_acqf(acqf, bounds, num_restarts=4, raw_samples=64, options={"seed": 0})
    assert cand.shape == (1, 2) and value.shape == ()
    assert torch.all(cand >= bounds[0]) and torch.all(cand <= bounds[1])
    with torch.no_grad():
        grid = _grid(bounds)
        vals = acqf(grid)
    best = vals.argmax()
    assert value.item() >= vals[best].item() - 1e-9  # at least as good as the 201 x 201 grid
    assert (cand[0] - grid[best, 0]).abs().max() <= 1.5 * (bounds[1] - bounds[0]).max() / 200
    torch.testing.assert_close(value, acqf(cand.unsqueeze(0))[0])


def test_logei_maximiser_matches_ei_maximiser(bump_gp):
    # log is monotone: both must pick (nearly) the same point, and LogEI's value is log of EI's there.
    bounds = torch.tensor([[0.0, 0.0], [1.0, 1.0]], dtype=torch.float64)
    best_f = bump_gp.train_targets.max()
    c_log, v_log = optimize_acqf(LogExpectedImprovement(bump_gp, best_f), bounds, options={"seed": 1})
    c_ei, v_ei = optimize_acqf(ExpectedImprovement(bump_gp, best_f), bounds, options={"seed": 1})
    assert v_log.item() == pytest.approx(v_ei.log().item(), abs=1e-3)
    assert (c_log - c_ei).abs().max() < 2e-2


def test_q_batch_candidates(bump_gp):
    bounds = torch.tensor([[0.0, 0.0], [1.0, 1.0]], dtype=torch.float64)
    acqf = qLogExpectedImprovement(bump_gp, bump_gp.train_targets.max(), num_samples=64)
    cand, value = optimize_acqf(acqf, bounds, q=3, num_restarts=2, raw_samples=32, options={"seed": 0, "maxiter": 50})
    assert cand.shape == (3, 2)
    assert torch.all(cand >= 0) and torch.all(cand <= 1)
    torch.testing.assert_close(value, acqf(cand))
    start = torch.quasirandom.SobolEngine(6, scramble=True, seed=0).draw(32, dtype=torch.float64).reshape(32, 3, 2)
    with torch.no_grad():
        assert value >= acqf(start).max()  # never worse than the best raw sample


def test_deterministic_given_seed(bump_gp):
    bounds = torch.tensor([[0.0, 0.0], [1.0, 1.0]], dtype=torch.float64)
    acqf = LogExpectedImprovement(bump_gp, 0.0)
    a = optimize_acqf(acqf, bounds, num_restarts=2, raw_samples=32, options={"seed": 3})
    b = optimize_acqf(acqf, bounds, num_restarts=2, raw_samples=32, options={"seed": 3})
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_errors(bump_gp):
    acqf = PosteriorMean(bump_gp)
    with pytest.raises(InputError, match=r"lower > upper in dimension\(s\) \[1\]"):
        optimize_acqf(acqf, torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=torch.float64))
    with pytest.raises(ShapeError, match=r"\(2, d\)"):
        optimize_acqf(acqf, torch.tensor([0.0, 1.0], dtype=torch.float64))
    with pytest.raises(ShapeError, match="trained on d = 2"):
        optimize_acqf(acqf, torch.tensor([[0.0] * 3, [1.0] * 3], dtype=torch.float64))
    with pytest.raises(ShapeError, match="qLogExpectedImprovement"):
        optimize_acqf(LogExpectedImprovement(bump_gp, 0.0), torch.tensor([[0.0, 0.0], [1.0, 1.0]]), q=2)
    with pytest.raises(InputError, match="raw_samples"):
        optimize_acqf(acqf, torch.tensor([[0.0, 0.0], [1.0, 1.0]]), num_restarts=8, raw_samples=4)
    with pytest.raises(InputError, match="unknown option"):
        optimize_acqf(acqf, torch.tensor([[0.0, 0.0], [1.0, 1.0]]), options={"max_iter": 3})
