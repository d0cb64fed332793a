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
