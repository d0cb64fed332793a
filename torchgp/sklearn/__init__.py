r"""scikit-learn estimators over torchgp: :class:`GaussianProcessRegressor` and :class:`GaussianProcessClassifier`.

They follow scikit-learn's conventions (``fit`` / ``predict(return_std=True)`` / ``predict_proba``,
``clone``, ``Pipeline``, ``GridSearchCV``, pickling) and pass ``check_estimator``; hyperparameters
are fitted with :func:`torchgp.fit` (L-BFGS-B on autograd gradients, float64 by default; Adam on
minibatches of the ELBO for the variational models used above ``variational_threshold`` points).
Fitted estimators are saved without pickle by ``torchgp.save(estimator, path)`` and come back from
``torchgp.load(path)``. Kernels are torchgp kernels or short strings (``"rbf + periodic * rbf"``, see
:mod:`torchgp.kernels.parse`). Needs scikit-learn (``pip install scikit-learn``).

Example:
    >>> import numpy as np
    >>> from torchgp.sklearn import GaussianProcessRegressor
    >>> X = np.linspace(0, 1, 30)[:, None]
    >>> gpr = GaussianProcessRegressor("rbf", random_state=0).fit(X, np.sin(6 * X[:, 0]))
    >>> mean, std = gpr.predict(X[:3], return_std=True)
    >>> mean.shape, std.shape
    ((3,), (3,))
"""

from __future__ import annotations

try:  # validate_data is scikit-learn >= 1.6's
    from sklearn.utils.validation import validate_data  # noqa: F401
except ImportError as err:  # pragma: no cover - exercised only without scikit-learn
    raise ImportError(
        "torchgp.sklearn needs scikit-learn >= 1.6: pip install 'scikit-learn>=1.6' (or pip install torchgp[sklearn])."
    ) from err

from torchgp.sklearn.classifier import GaussianProcessClassifier
from torchgp.sklearn.regressor import GaussianProcessRegressor

__all__ = ["GaussianProcessRegressor", "GaussianProcessClassifier", "EXPECTED_FAILED_CHECKS"]

#: ``check_estimator`` checks that cannot apply, by estimator class name, with the reason.
#: (Empty: every check applies and passes.)
EXPECTED_FAILED_CHECKS: dict[str, dict[str, str]] = {"GaussianProcessRegressor": {}, "GaussianProcessClassifier": {}}
