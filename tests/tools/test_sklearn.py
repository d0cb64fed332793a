import pickle
import warnings

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")
from sklearn.base import clone  # noqa: E402
from sklearn.model_selection import GridSearchCV, train_test_split  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import check_estimator  # noqa: E402

from torchgp.sklearn import EXPECTED_FAILED_CHECKS, GaussianProcessClassifier, GaussianProcessRegressor  # noqa: E402


# Every check runs; a few optimiser iterations (epochs) per fit keep the ~100 fits cheap. The checks
# assert behaviour (shapes, invariances, determinism) plus accuracy floors that these fits clear.
@pytest.mark.parametrize(
    "estimator",
    [
        GaussianProcessRegressor(max_iter=10),
        GaussianProcessClassifier(max_iter=10),
        GaussianProcessClassifier(max_iter=10, variational_threshold=0, num_inducing=16),
    ],
    ids=["GaussianProcessRegressor", "GaussianProcessClassifier", "GaussianProcessClassifier-variational"],
)
def test_check_estimator(estimator):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = check_estimator(
            estimator, expected_failed_checks=EXPECTED_FAILED_CHECKS[type(estimator).__name__], on_fail=None
        )
    failed = [(r["check_name"], str(r["exception"])[:200]) for r in results if r["status"] == "failed"]
    assert not failed
    assert sum(r["status"] == "passed" for r in results) > 40


def nlpd(y, mean, std):
    return float(np.mean(0.5 * ((y - mean) / std) ** 2 + np.log(std) + 0.5 * np.log(2 * np.pi)))


def test_diabetes_no_worse_than_scikit_learn():
    from sklearn.datasets import load_diabetes
    from sklearn.gaussian_process import GaussianProcessRegressor as SkGPR
    from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel

    X, y = load_diabetes(return_X_y=True)
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.2, random_state=0)
    xs, ys = StandardScaler().fit(X_tr), StandardScaler().fit(y_tr[:, None])
    X_tr, X_te = xs.transform(X_tr), xs.transform(X_te)
    y_tr, y_te = ys.transform(y_tr[:, None])[:, 0], ys.transform(y_te[:, None])[:, 0]

    kernel = ConstantKernel() * RBF(length_scale=np.ones(X.shape[1])) + WhiteKernel()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning at bounds
        sk = SkGPR(kernel, n_restarts_optimizer=3, random_state=0).fit(X_tr, y_tr)  # the reference
    ours = GaussianProcessRegressor("rbf", n_restarts_optimizer=3, random_state=0).fit(X_tr, y_tr)
    m_sk, s_sk = sk.predict(X_te, return_std=True)
    m_tg, s_tg = ours.predict(X_te, return_std=True)
    rmse_sk, rmse_tg = np.sqrt(np.mean((m_sk - y_te) ** 2)), np.sqrt(np.mean((m_tg - y_te) ** 2))
    assert rmse_tg <= rmse_sk + 1e-3, (rmse_tg, rmse_sk)
    assert nlpd(y_te, m_tg, s_tg) <= nlpd(y_te, m_sk, s_sk) + 1e-3, (nlpd(y_te, m_tg, s_tg), nlpd(y_te, m_sk, s_sk))
    assert ours.log_marginal_likelihood_value_ >= sk.log_marginal_likelihood_value_ - 0.5


def test_predict_options_sample_y_and_pickle():
    rng = np.random.default_rng(0)
    X = rng.uniform(0, 5, (40, 1))
    y = np.sin(2 * X[:, 0]) + 0.05 * rng.standard_normal(40)
    gpr = GaussianProcessRegressor("rbf + periodic", random_state=0, max_iter=100).fit(X, y)
    Xs = np.linspace(0, 5, 7)[:, None]
    mean, std = gpr.predict(Xs, return_std=True)
    mean2, cov = gpr.predict(Xs, return_cov=True)
    np.testing.assert_allclose(mean, mean2)
    np.testing.assert_allclose(std, np.sqrt(np.diag(cov)), rtol=1e-8)
    assert np.all(np.abs(mean - np.sin(2 * Xs[:, 0])) < 0.2)
    samples = gpr.sample_y(Xs, n_samples=500, random_state=1)
    assert samples.shape == (7, 500)
    np.testing.assert_allclose(samples.mean(1), mean, atol=4 * std.max() / np.sqrt(500) + 1e-3)
    np.testing.assert_array_equal(gpr.sample_y(Xs, 3, random_state=2), gpr.sample_y(Xs, 3, random_state=2))
    latent = GaussianProcessRegressor("rbf + periodic", random_state=0, max_iter=100, include_noise=False).fit(X, y)
    assert np.all(latent.predict(Xs, return_std=True)[1] < std)
    restored = pickle.loads(pickle.dumps(gpr))
    np.testing.assert_array_equal(restored.predict(Xs), mean)
    assert gpr.score(X, y) > 0.95
    with pytest.raises(ValueError, match="at most one"):
        gpr.predict(Xs, return_std=True, return_cov=True)


def test_pipeline_grid_search_and_clone():
    rng = np.random.default_rng(1)
    X = rng.uniform(-2, 2, (60, 2))
    y = np.sin(X[:, 0]) * X[:, 1] + 0.05 * rng.standard_normal(60)
    pipe = make_pipeline(StandardScaler(), GaussianProcessRegressor(max_iter=60))
    search = GridSearchCV(pipe, {"gaussianprocessregressor__kernel": ["rbf", "matern32", "linear"]}, cv=3)
    search.fit(X, y)
    assert search.best_params_["gaussianprocessregressor__kernel"] in ("rbf", "matern32")
    est = GaussianProcessRegressor(kernel="rq", n_restarts_optimizer=2)
    copy = clone(est)
    assert copy.get_params() == est.get_params() and not hasattr(copy, "model_")


def test_classifier_probabilities_and_multiclass():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((90, 2))
    y = np.where(X[:, 0] + 0.3 * rng.standard_normal(90) > 0, "pos", "neg")
    clf = GaussianProcessClassifier(random_state=0).fit(X, y)
    proba = clf.predict_proba(X)
    assert proba.shape == (90, 2) and np.allclose(proba.sum(1), 1)
    assert clf.score(X, y) > 0.85 and list(clf.classes_) == ["neg", "pos"]
    far = clf.predict_proba(np.array([[-1.5, 0.0], [1.5, 0.0], [0.0, 0.0]]))
    assert far[0, 0] > 0.8 and far[1, 1] > 0.8 and abs(far[2, 1] - 0.5) < 0.25
    y3 = np.digitize(X[:, 0], [-0.5, 0.5])
    clf3 = GaussianProcessClassifier(random_state=0).fit(X, y3)
    assert clf3.predict_proba(X).shape == (90, 3) and clf3.score(X, y3) > 0.8
    restored = pickle.loads(pickle.dumps(clf3))
    np.testing.assert_array_equal(restored.predict_proba(X), clf3.predict_proba(X))
    with pytest.raises(ValueError, match="at least 2 classes"):
        GaussianProcessClassifier().fit(X, np.zeros(90))


def two_moons_like(n, rng):
    X = rng.uniform(-3, 3, (n, 2))
    y = (np.sin(1.5 * X[:, 0]) + 0.5 * X[:, 1] + 0.3 * rng.standard_normal(n) > 0).astype(int)
    return X, y


def test_variational_classifier_matches_laplace():
    rng = np.random.default_rng(0)
    X, y = two_moons_like(400, rng)
    X_te, y_te = two_moons_like(1000, rng)
    laplace = GaussianProcessClassifier(random_state=0).fit(X, y)
    svgp = GaussianProcessClassifier(random_state=0, variational_threshold=200, num_inducing=32).fit(X, y)
    assert not laplace.variational_ and svgp.variational_ and len(svgp.models_) == 1
    assert svgp.score(X_te, y_te) >= laplace.score(X_te, y_te) - 0.02, (
        svgp.score(X_te, y_te),
        laplace.score(X_te, y_te),
    )
    proba = svgp.predict_proba(X_te)
    assert proba.shape == (1000, 2) and np.allclose(proba.sum(1), 1) and np.all((proba >= 0) & (proba <= 1))
    y3 = np.digitize(X[:, 0], [-1, 1])
    multi = GaussianProcessClassifier(random_state=0, variational_threshold=200, num_inducing=16, max_iter=30).fit(
        X, y3
    )
    proba3 = multi.predict_proba(X)
    assert proba3.shape == (400, 3) and np.allclose(proba3.sum(1), 1) and multi.score(X, y3) > 0.9
    again = GaussianProcessClassifier(random_state=0, variational_threshold=200, num_inducing=16, max_iter=30).fit(
        X, y3
    )
    np.testing.assert_array_equal(again.predict_proba(X), proba3)  # reproducible from random_state


@pytest.mark.parametrize(
    "make",
    [
        lambda: GaussianProcessRegressor("rbf + linear", max_iter=30, random_state=0),
        lambda: GaussianProcessRegressor(max_iter=3, variational_threshold=50, num_inducing=10, random_state=0),
        lambda: GaussianProcessClassifier(max_iter=20, random_state=0),
        lambda: GaussianProcessClassifier(max_iter=5, variational_threshold=50, num_inducing=10, random_state=0),
    ],
    ids=["regressor", "regressor-variational", "classifier", "classifier-variational"],
)
def test_estimators_save_and_load_without_pickle(tmp_path, make):
    import torchgp

    rng = np.random.default_rng(2)
    X = rng.standard_normal((80, 2))
    est = make()
    if isinstance(est, GaussianProcessClassifier):
        y = np.array(["low", "mid", "high"])[np.digitize(X[:, 0], [-0.5, 0.5])]
    else:
        y = np.sin(2 * X[:, 0]) + 0.1 * rng.standard_normal(80)
    est.fit(X, y)
    torchgp.save(est, tmp_path / "est.safetensors")
    loaded = torchgp.load(tmp_path / "est.safetensors")
    assert type(loaded) is type(est) and loaded.get_params() == est.get_params()
    Xs = rng.standard_normal((15, 2))
    if isinstance(est, GaussianProcessClassifier):
        np.testing.assert_array_equal(loaded.predict_proba(Xs), est.predict_proba(Xs))
        np.testing.assert_array_equal(loaded.classes_, est.classes_)
    else:
        for a, b in zip(loaded.predict(Xs, return_std=True), est.predict(Xs, return_std=True)):
            np.testing.assert_array_equal(a, b)
        assert loaded.log_marginal_likelihood_value_ == est.log_marginal_likelihood_value_
    assert loaded.n_iter_ == est.n_iter_ and loaded.n_features_in_ == 2


def test_estimator_with_a_kernel_object_saves(tmp_path):
    import torchgp

    kernel = torchgp.kernels.ScaleKernel(torchgp.kernels.MaternKernel(nu=1.5))
    rng = np.random.default_rng(3)
    X = rng.uniform(0, 3, (30, 1))
    est = GaussianProcessRegressor(kernel, max_iter=20, random_state=0).fit(X, np.cos(2 * X[:, 0]))
    torchgp.save(est, tmp_path / "k.st")
    loaded = torchgp.load(tmp_path / "k.st")
    assert isinstance(loaded.kernel, torchgp.kernels.ScaleKernel) and loaded.kernel.base_kernel.nu == 1.5
    np.testing.assert_array_equal(loaded.predict(X), est.predict(X))
    with pytest.raises(ValueError, match="fitted torchgp.sklearn estimator"):
        torchgp.save(object(), tmp_path / "x.st")
