"""The scikit-learn regressor with a 2-D ``y (n, t)``: independent outputs or an ICM, by ``multioutput``."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")
from sklearn.metrics import r2_score  # noqa: E402
from sklearn.utils.estimator_checks import check_estimator  # noqa: E402

import torchgp  # noqa: E402
from torchgp.errors import InputError  # noqa: E402
from torchgp.models.builders import IndependentMultitaskGPModel, MultitaskExactGPModel  # noqa: E402
from torchgp.sklearn import EXPECTED_FAILED_CHECKS, GaussianProcessRegressor  # noqa: E402


def _data(n=20, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.uniform(0, 1, (n, 2))
    Y = np.stack([np.sin(5 * X[:, 0]), 3 * np.cos(4 * X[:, 1]) + 2, X[:, 0] - X[:, 1]], -1)
    return X, Y + 0.05 * rng.standard_normal(Y.shape)


def _fit(multioutput, X, Y, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return GaussianProcessRegressor(multioutput=multioutput, max_iter=30, random_state=0, **kw).fit(X, Y)


@pytest.mark.parametrize("multioutput", ["independent", "icm"])
def test_shapes_score_and_consistent_std_cov_and_samples(multioutput):
    X, Y = _data()
    est = _fit(multioutput, X, Y, icm_rank=2)
    assert est.n_outputs_ == 3
    assert isinstance(
        est.model_, IndependentMultitaskGPModel if multioutput == "independent" else MultitaskExactGPModel
    )
    Xs = np.random.default_rng(1).uniform(0, 1, (5, 2))
    mean, std = est.predict(Xs, return_std=True)
    mean_c, cov = est.predict(Xs, return_cov=True)
    assert mean.shape == std.shape == (5, 3) and cov.shape == (5, 5, 3)
    np.testing.assert_allclose(mean_c, mean, rtol=1e-12)
    np.testing.assert_allclose(np.sqrt(np.diagonal(cov, axis1=0, axis2=1).T), std, rtol=1e-10)
    assert est.score(X, Y) == pytest.approx(r2_score(Y, est.predict(X), multioutput="raw_values").mean(), rel=1e-12)
    assert est.score(X, Y) > 0.9
    draws = est.sample_y(Xs, n_samples=4000, random_state=0)
    assert draws.shape == (5, 3, 4000)
    np.testing.assert_allclose(draws.mean(-1), mean, atol=5 * std.max() / np.sqrt(4000))
    np.testing.assert_allclose(draws.std(-1), std, rtol=0.1)


def test_independent_outputs_follow_their_columns():
    X, Y = _data()
    est = _fit("independent", X, Y)
    swapped = _fit("independent", X, Y[:, ::-1])
    Xs = np.random.default_rng(2).uniform(0, 1, (4, 2))
    m, s = est.predict(Xs, return_std=True)
    m2, s2 = swapped.predict(Xs, return_std=True)
    np.testing.assert_allclose(m2[:, ::-1], m, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(s2[:, ::-1], s, rtol=1e-4, atol=1e-6)


def test_each_output_is_standardised_on_its_own():
    X, Y = _data()
    est = _fit("icm", X, Y)
    scale = np.array([1.0, 128.0, 1 / 64])  # powers of two: the standardised targets are bit-identical
    scaled = _fit("icm", X, Y * scale)
    Xs = X[:4] + 0.01
    m, s = est.predict(Xs, return_std=True)
    m2, s2 = scaled.predict(Xs, return_std=True)
    np.testing.assert_allclose(m2 / scale, m, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(s2 / scale, s, rtol=1e-10)


def test_a_single_column_y_is_a_single_output():
    X, Y = _data()
    one = _fit("icm", X, Y[:, :1])
    flat = _fit("icm", X, Y[:, 0])
    assert one.n_outputs_ == 1 and one.predict(X[:3]).shape == (3,)
    np.testing.assert_allclose(one.predict(X[:3]), flat.predict(X[:3]), rtol=1e-12)


@pytest.mark.parametrize("multioutput", ["independent", "icm"])
def test_fitted_multi_output_estimators_save_and_load(multioutput, tmp_path):
    X, Y = _data()
    est = _fit(multioutput, X, Y)
    torchgp.save(est, tmp_path / "e.safetensors")
    loaded = torchgp.load(tmp_path / "e.safetensors")
    assert loaded.get_params() == est.get_params() and loaded.n_outputs_ == 3
    Xs = X[:5] + 0.02
    for a, b in zip(loaded.predict(Xs, return_std=True), est.predict(Xs, return_std=True)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_bad_multi_output_parameters_are_refused():
    X, Y = _data(n=8)
    with pytest.raises(InputError, match="icm_rank"):
        GaussianProcessRegressor(multioutput="icm", icm_rank=4).fit(X, Y)
    with pytest.raises(InputError, match="multioutput"):
        GaussianProcessRegressor(multioutput="shared").fit(X, Y)
    with pytest.raises(InputError, match="icm_rank"):
        GaussianProcessRegressor(multioutput="icm", icm_rank=0).fit(X, Y)


def test_check_estimator_with_the_icm():
    est = GaussianProcessRegressor(max_iter=10, multioutput="icm")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = check_estimator(
            est, expected_failed_checks=EXPECTED_FAILED_CHECKS["GaussianProcessRegressor"], on_fail=None
        )
    failed = [(r["check_name"], str(r["exception"])[:200]) for r in results if r["status"] == "failed"]
    assert not failed
