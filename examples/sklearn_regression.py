"""
scikit-learn estimators
=======================

torchgp's scikit-learn estimators in a Pipeline and a grid search. Run::

    python examples/sklearn_regression.py [--small]
"""

import argparse

import numpy as np
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from torchgp.sklearn import GaussianProcessClassifier, GaussianProcessRegressor


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--small", action="store_true", help="fewer points (for CI)")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    n = 80 if args.small else 400
    X = rng.uniform(0, 10, (n, 2))
    y = np.sin(X[:, 0]) + 0.1 * X[:, 1] ** 2 + 0.1 * rng.standard_normal(n)
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.25, random_state=0)

    pipe = make_pipeline(StandardScaler(), GaussianProcessRegressor(random_state=0))
    search = GridSearchCV(pipe, {"gaussianprocessregressor__kernel": ["rbf", "matern52", "rbf + linear"]}, cv=3)
    search.fit(X_tr, y_tr)
    best = search.best_estimator_
    mean, std = best.predict(X_te, return_std=True)
    coverage = np.mean(np.abs(y_te - mean) <= 1.96 * std)
    print(
        f"best kernel {search.best_params_['gaussianprocessregressor__kernel']!r}: test R^2 "
        f"{best.score(X_te, y_te):.3f}, 95% coverage {coverage:.2f}"
    )

    threshold = np.median(y)
    clf = GaussianProcessClassifier(random_state=0).fit(X_tr, y_tr > threshold)
    print(f"classifier accuracy {clf.score(X_te, y_te > threshold):.3f}")


if __name__ == "__main__":
    main()
