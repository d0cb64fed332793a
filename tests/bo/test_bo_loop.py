"""The BO loop end to end on Branin, and the surrogate fit."""

import math

import pytest
import torch

from torchgp import bo
from torchgp.errors import InputError

BRANIN_MIN = 0.397887
BRANIN_BOUNDS = torch.tensor([[-5.0, 0.0], [10.0, 15.0]], dtype=torch.float64)


def branin(x):
    x1, x2 = x[0].item(), x[1].item()
    b, c, r, s, t = 5.1 / (4 * math.pi**2), 5 / math.pi, 6.0, 10.0, 1 / (8 * math.pi)
    return (x2 - b * x1**2 + c * x1 - r) ** 2 + s * (1 - t) * math.cos(x1) + s


def test_branin_reaches_global_minimum_within_25_evaluations():
    seen = []
    res = bo.minimize(branin, BRANIN_BOUNDS, n_init=5, n_iter=20, seed=0, callback=lambda i, x, y: seen.append(y))
    assert res.X.shape == (25, 2) and res.y.shape == (25,) and len(seen) == 25
    assert torch.all(res.X >= BRANIN_BOUNDS[0]) and torch.all(res.X <= BRANIN_BOUNDS[1])
    assert res.fun == min(seen) == pytest.approx(branin(res.x))
    assert res.fun - BRANIN_MIN < 0.1
    # The Sobol start alone is nowhere near: the model-guided steps did the work.
    assert min(seen[:5]) - BRANIN_MIN > 1.0


@pytest.mark.parametrize("fitter", [bo.fit_gp_mll, bo.fit_scipy_lbfgsb])
def test_fit_improves_the_marginal_likelihood(fitter):
    X = torch.rand(15, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y = torch.sin(5 * X[:, 0]) + X[:, 1] ** 2
    y = (y - y.mean()) / y.std()
    model = bo.BOModel(X, y).double()
    mll = bo.loop.ExactMarginalLogLikelihood(model.likelihood, model)
    model.train()
    before = -mll(model(X), y).item()
    after = fitter(model)
    assert after < before - 0.1
    assert not model.training  # left ready for acquisition functions
    model.train()
    assert -mll(model(X), y).item() == pytest.approx(after, rel=1e-8)  # the model holds the reported fit
    model.eval()


def test_minimize_errors():
    with pytest.raises(InputError, match="acquisition"):
        bo.minimize(branin, BRANIN_BOUNDS, acquisition="pi")
    with pytest.raises(InputError, match="n_init"):
        bo.minimize(branin, BRANIN_BOUNDS, n_init=1)
    with pytest.raises(InputError, match="finite"):
        bo.minimize(lambda x: float("nan"), BRANIN_BOUNDS, n_init=2, n_iter=0)


def test_example_script_runs(capsys):
    import pathlib
    import runpy

    path = pathlib.Path(__file__).resolve().parents[2] / "examples" / "bo_branin.py"
    runpy.run_path(str(path), run_name="__main__")
    out = capsys.readouterr().out
    assert "after 25 evaluations" in out
    regret = float(out.split("regret ")[1].split()[0])
    assert 0 <= regret < 0.1


def test_warm_started_fit_reaches_the_cold_fits_optimum():
    g = torch.Generator().manual_seed(3)
    X = torch.rand(16, 2, generator=g, dtype=torch.float64)
    y = torch.sin(5 * X[:, 0]) + X[:, 1] ** 2
    y = (y - y.mean()) / y.std()
    previous = bo.fit_surrogate(X[:-1], y[:-1])  # last round's model, one observation fewer
    warm = bo.fit_surrogate(X, y, previous)
    cold = bo.fit_surrogate(X, y)
    assert not warm.training and not cold.training
    mll = bo.loop.ExactMarginalLogLikelihood(warm.likelihood, warm)
    losses = []
    for model in (warm, cold):
        model.train()
        mll.model, mll.likelihood = model, model.likelihood
        losses.append(-mll(model(X), y).item())
        model.eval()
    assert losses[0] == pytest.approx(losses[1], abs=1e-6)
    ls = [m.covar_module.base_kernel.lengthscale.detach() for m in (warm, cold)]
    torch.testing.assert_close(ls[0], ls[1], rtol=1e-3, atol=0)
    torch.testing.assert_close(warm.covar_module.outputscale, cold.covar_module.outputscale, rtol=1e-3, atol=0)
    # the warm start did start from last round's values: its data are this round's, its initial values are not
    fresh = bo.BOModel(X, y).double()
    fresh.load_state_dict(previous.state_dict())
    torch.testing.assert_close(
        fresh.covar_module.base_kernel.lengthscale, previous.covar_module.base_kernel.lengthscale
    )
    assert fresh.train_inputs[0].shape == (16, 2)


def test_minimize_without_warm_start():
    runs = [bo.minimize(branin, BRANIN_BOUNDS, n_init=5, n_iter=2, seed=1, warm_start=w) for w in (True, False)]
    for res in runs:
        assert res.X.shape == (7, 2) and torch.all(res.X >= BRANIN_BOUNDS[0]) and torch.all(res.X <= BRANIN_BOUNDS[1])
    torch.testing.assert_close(runs[0].X[:5], runs[1].X[:5], rtol=0, atol=0)  # the same initial design
    # round 1 has no previous model: both fit from the defaults and choose the same point
    torch.testing.assert_close(runs[0].X[5], runs[1].X[5], rtol=1e-6, atol=1e-6)


def test_warm_start_frees_a_noise_pinned_at_its_floor(monkeypatch):
    g = torch.Generator().manual_seed(5)
    X = torch.rand(20, 2, generator=g, dtype=torch.float64)
    y = torch.sin(6 * X[:, 0]) + 0.5 * torch.randn(20, generator=g, dtype=torch.float64)  # clearly noisy
    y = (y - y.mean()) / y.std()
    previous = bo.BOModel(X, y).double()
    previous.likelihood.noise_covar.raw_noise.data.fill_(-20.0)  # noise at its floor: softplus' slope ~ 2e-9
    cold = bo.fit_surrogate(X, y)
    warm = bo.fit_surrogate(X, y, previous)
    assert cold.likelihood.noise.item() > 0.05
    torch.testing.assert_close(warm.likelihood.noise, cold.likelihood.noise, rtol=1e-3, atol=0)
    # without the floor on the raw values the warm start stays pinned there
    monkeypatch.setattr(bo.loop, "_WARM_RAW_FLOOR", -float("inf"))
    pinned = bo.fit_surrogate(X, y, previous)
    assert pinned.likelihood.noise.item() < 1e-3


def test_warm_start_leaves_a_noise_at_its_floor_where_the_data_want_it_there():
    g = torch.Generator().manual_seed(6)
    X = torch.rand(14, 2, generator=g, dtype=torch.float64)
    y = torch.sin(3 * X[:, 0]) + X[:, 1] ** 2  # smooth and noise-free: the optimum's noise is at its floor
    y = (y - y.mean()) / y.std()
    previous = bo.fit_surrogate(X[:-1], y[:-1])
    assert previous.likelihood.noise_covar.raw_noise.item() < bo.loop._WARM_RAW_FLOOR
    start = bo.BOModel(X, y).double()
    start.load_state_dict(previous.state_dict())
    bo.loop._free_pinned(start)
    torch.testing.assert_close(start.likelihood.noise, previous.likelihood.noise)  # not moved
    warm, cold = bo.fit_surrogate(X, y, previous), bo.fit_surrogate(X, y)
    assert warm.likelihood.noise.item() < 1e-4 and cold.likelihood.noise.item() < 1e-4


def test_fit_surrogate_names_a_previous_model_of_other_inputs():
    X = torch.rand(8, 2, dtype=torch.float64)
    y = X.sum(-1)
    previous = bo.fit_surrogate(torch.rand(8, 3, dtype=torch.float64), y)
    with pytest.raises(InputError, match="same 2 inputs as X; got a BOModel on 3 inputs"):
        bo.fit_surrogate(X, y, previous)
    with pytest.raises(InputError, match="got dict"):
        bo.fit_surrogate(X, y, {})
