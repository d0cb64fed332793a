"""GP classification on scikit-learn's breast-cancer data: at least GaussianProcessClassifier's accuracy."""

from __future__ import annotations

import pytest
import torch

import torchgp

sklearn = pytest.importorskip("sklearn")

from sklearn.datasets import load_breast_cancer  # noqa: E402
from sklearn.gaussian_process import GaussianProcessClassifier  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from ._helpers import SVGP  # noqa: E402


def test_breast_cancer_accuracy_at_least_sklearn_gpc():
    X, y = load_breast_cancer(return_X_y=True)
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)
    scaler = StandardScaler().fit(X_tr)
    X_tr, X_te = scaler.transform(X_tr), scaler.transform(X_te)
    sk_acc = GaussianProcessClassifier(random_state=0).fit(X_tr, y_tr).score(X_te, y_te)

    Xt, yt = torch.tensor(X_tr), torch.tensor(y_tr, dtype=torch.float64)
    torch.manual_seed(0)
    model = SVGP(Xt[torch.randperm(len(Xt))[:64]].clone()).double()
    model.initialize(**{"covar_module.base_kernel.lengthscale": 5.0})
    lik = torchgp.likelihoods.BernoulliLikelihood()
    mll = torchgp.mlls.VariationalELBO(lik, model, num_data=len(yt))
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(150):
        opt.zero_grad()
        (-mll(model(Xt), yt)).backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        probs = lik(model(torch.tensor(X_te))).probs
    acc = ((probs > 0.5).double() == torch.tensor(y_te, dtype=torch.float64)).double().mean().item()
    assert acc >= sk_acc, (acc, sk_acc)
