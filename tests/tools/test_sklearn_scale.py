"""The estimators fit as on standardised inputs: inputs at 1e-6 or 1e6 score as standardised inputs do."""

import numpy as np
import pytest

pytest.importorskip("sklearn")

from torchgp.sklearn import GaussianProcessClassifier, GaussianProcessRegressor  # noqa: E402


def _data(n: int, seed: int):
    rng = np.random.default_rng(seed)
    X = rng.uniform(0, 1, (n, 2))
    f = np.sin(5 * X[:, 0]) + X[:, 1]
    return X, f, rng


@pytest.mark.parametrize("scale", [1e-6, 1e6])
def test_regressor_scores_do_not_depend_on_the_inputs_scale(scale):
    X, f, rng = _data(40, 0)
    y = f + 0.05 * rng.standard_normal(40)
    Xt, ft, _ = _data(30, 1)
    mu, sd = X.mean(0), X.std(0)
    ref = GaussianProcessRegressor("rbf", random_state=0).fit((X - mu) / sd, y).score((Xt - mu) / sd, ft)
    got = GaussianProcessRegressor("rbf", random_state=0).fit(X * scale, y).score(Xt * scale, ft)
    assert ref > 0.9
    assert got == pytest.approx(ref, abs=1e-4)


@pytest.mark.parametrize("scale", [1e-6, 1e6])
@pytest.mark.parametrize("classes", [2, 3])
def test_classifier_scores_do_not_depend_on_the_inputs_scale(scale, classes):
    X, f, _ = _data(40, 0)
    Xt, ft, _ = _data(30, 1)
    edges = np.quantile(f, np.linspace(0, 1, classes + 1)[1:-1])
    y, yt = np.digitize(f, edges), np.digitize(ft, edges)
    mu, sd = X.mean(0), X.std(0)
    ref = GaussianProcessClassifier("rbf", random_state=0).fit((X - mu) / sd, y)
    got = GaussianProcessClassifier("rbf", random_state=0).fit(X * scale, y)
    assert ref.score((Xt - mu) / sd, yt) > 0.8
    assert got.score(Xt * scale, yt) == ref.score((Xt - mu) / sd, yt)
    p_ref, p_got = ref.predict_proba((Xt - mu) / sd), got.predict_proba(Xt * scale)
    assert np.abs(p_got - p_ref).max() < 1e-4
    ls_ref = ref.models_[0].covar_module.base_kernel.lengthscale.detach().numpy().ravel()
    ls_got = got.models_[0].covar_module.base_kernel.lengthscale.detach().numpy().ravel()
    np.testing.assert_allclose(ls_got, ls_ref * sd * scale, rtol=1e-3)  # reported in the inputs' own units
