"""The Laplace GP classifier on its own, against a NumPy transcription of R&W (2006) Algs. 3.1 and 3.2."""

import math

import numpy as np
import pytest
import torch

import torchgp
from tests._tol import assert_close
from torchgp.errors import InputError, ShapeError
from torchgp.models.laplace_classifier import LaplaceGPClassifier, LaplaceMarginalLogLikelihood


def problem(n=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.rand(n, 2, generator=g, dtype=torch.float64) * 4 - 2
    t = (X[:, 0] + 0.5 * X[:, 1] + 0.3 * torch.randn(n, generator=g, dtype=torch.float64) > 0).double()
    model = LaplaceGPClassifier(X, t).double()
    model.covar_module.outputscale = 2.0
    model.covar_module.base_kernel.lengthscale = torch.tensor([[0.8, 1.3]])
    return model, X, t


def numpy_K(model, A, B):
    """ScaleKernel(RBF, ARD) in NumPy: s² exp(-½ Σ_k (a_k - b_k)² / ℓ_k²)."""
    s = float(model.covar_module.outputscale.detach())
    ell = model.covar_module.base_kernel.lengthscale.detach().numpy().reshape(-1)
    diff = (A[:, None, :] - B[None, :, :]) / ell
    return s * np.exp(-0.5 * (diff**2).sum(-1))


def numpy_laplace(K, y):
    """R&W Alg. 3.1 (mode, log q(y|X)) with y ∈ {-1, +1} and the logistic likelihood."""
    n = len(y)
    t = (y + 1) / 2
    f = np.zeros(n)
    for _ in range(200):
        pi = 1 / (1 + np.exp(-f))
        W = pi * (1 - pi)
        sW = np.sqrt(W)
        L = np.linalg.cholesky(np.eye(n) + sW[:, None] * K * sW[None, :])
        b = W * f + (t - pi)
        a = b - sW * np.linalg.solve(L.T, np.linalg.solve(L, sW * (K @ b)))
        f_new = K @ a
        if np.max(np.abs(f_new - f)) < 1e-13:
            f = f_new
            break
        f = f_new
    pi = 1 / (1 + np.exp(-f))
    sW = np.sqrt(pi * (1 - pi))
    L = np.linalg.cholesky(np.eye(n) + sW[:, None] * K * sW[None, :])
    a = np.linalg.solve(K, f)
    log_q = -0.5 * a @ f - np.sum(np.log1p(np.exp(-y * f))) - np.sum(np.log(np.diag(L)))
    return f, log_q, L, pi, sW


def numpy_predict(K, K_s, k_ss, y, f, L, pi, sW):
    """R&W Alg. 3.2: latent mean, variance, and the probit-approximate probability."""
    t = (y + 1) / 2
    mean = K_s @ (t - pi)
    v = np.linalg.solve(L, sW[:, None] * K_s.T)
    var = k_ss - (v**2).sum(0)
    return mean, var, 1 / (1 + np.exp(-mean / np.sqrt(1 + math.pi * var / 8)))


def jitter(n):
    return torchgp.settings.cholesky_jitter.value(torch.float64) * np.eye(n)


def test_mode_and_log_marginal_match_algorithm_3_1():
    model, X, t = problem()
    K = numpy_K(model, X.numpy(), X.numpy()) + jitter(len(t))
    f_ref, log_q_ref, *_ = numpy_laplace(K, 2 * t.numpy() - 1)
    value, f_hat = model.log_marginal_likelihood()
    assert_close(f_hat, f_ref)
    assert_close(value.detach(), log_q_ref)


def test_predictions_match_algorithm_3_2_and_quadrature():
    model, X, t = problem()
    Xs = torch.tensor([[-1.5, 0.2], [0.1, -0.3], [1.7, 1.0]], dtype=torch.float64)
    K = numpy_K(model, X.numpy(), X.numpy()) + jitter(len(t))
    y = 2 * t.numpy() - 1
    f, _, L, pi, sW = numpy_laplace(K, y)
    K_s = numpy_K(model, Xs.numpy(), X.numpy())
    mean, var, proba = numpy_predict(
        K, K_s, np.full(3, float(model.covar_module.outputscale.detach())), y, f, L, pi, sW
    )
    post = model.posterior()
    latent = post.latent(Xs)
    assert_close(latent.mean, mean)
    assert_close(latent.variance, var)
    assert_close(post.predict_proba(Xs), proba)
    model.eval()
    assert_close(model(Xs).mean, mean)  # eval mode: the same posterior
    # the probit approximation of ∫ σ(f) N(f; μ, v) df against Gauss-Hermite quadrature
    z, w = np.polynomial.hermite_e.hermegauss(80)
    exact = np.array([np.sum(w / (1 + np.exp(-(m + np.sqrt(s) * z)))) / np.sqrt(2 * np.pi) for m, s in zip(mean, var)])
    np.testing.assert_allclose(proba, exact, atol=0.02)


def test_gradient_is_the_derivative_of_the_converged_objective():
    model, X, t = problem(n=8)
    y = 2 * t.numpy() - 1
    value, _ = model.log_marginal_likelihood()
    params = [p for _, p in model.named_parameters()]
    grads = torch.autograd.grad(value, params)
    eps = 1e-6
    for p, g in zip(params, grads):
        for i in range(p.numel()):
            vals = []
            for sign in (1, -1):
                with torch.no_grad():
                    p.view(-1)[i] += sign * eps
                K = numpy_K(model, X.numpy(), X.numpy()) + jitter(len(y))
                vals.append(numpy_laplace(K, y)[1])
                with torch.no_grad():
                    p.view(-1)[i] -= sign * eps
            fd = (vals[0] - vals[1]) / (2 * eps)
            assert abs(float(g.reshape(-1)[i]) - fd) < 1e-6 * max(1.0, abs(fd)), (i, float(g.reshape(-1)[i]), fd)


def test_evaluation_changes_nothing_on_the_model():
    model, X, t = problem()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    attrs = set(vars(model))
    v1, f1 = model.log_marginal_likelihood()
    v2, _ = model.log_marginal_likelihood()
    assert v1.item() == v2.item()  # no hidden warm start: the same value from the same state
    v3, _ = model.log_marginal_likelihood(warm_start=f1 + 0.1)
    assert abs(v3.item() - v1.item()) < 1e-9
    model(X)
    assert set(vars(model)) == attrs
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])


def test_fit_without_scikit_learn_and_fresh_predictions():
    model, X, t = problem(n=20, seed=1)
    mll = LaplaceMarginalLogLikelihood(model)
    start = model.log_marginal_likelihood()[0].item()
    result = torchgp.fit(mll, maxiter=8, progress=False)
    assert result.iterations > 0
    assert float(model.log_marginal_likelihood()[0]) > start
    model.eval()
    accuracy = ((model.posterior().predict_proba(X) > 0.5).double() == t).double().mean()
    assert accuracy > 0.8
    Xs = torch.tensor([[0.3, 0.3]], dtype=torch.float64)
    first = model(Xs).variance
    model.covar_module.outputscale = 5.0  # eval-mode predictions follow the hyperparameters
    assert not torch.equal(model(Xs).variance, first)


def test_bad_labels_and_shapes_are_named():
    X = torch.rand(5, 2, dtype=torch.float64)
    with pytest.raises(InputError, match=r"labels in \{0, 1\}"):
        LaplaceGPClassifier(X, torch.tensor([0.0, 1.0, 2.0, 0.0, 1.0], dtype=torch.float64))
    with pytest.raises(ShapeError, match="labels of shape"):
        LaplaceGPClassifier(X, torch.zeros(4, dtype=torch.float64))
    model = LaplaceGPClassifier(X, torch.tensor([0.0, 1.0, 1.0, 0.0, 1.0], dtype=torch.float64)).double()
    with pytest.raises(ShapeError, match="test inputs"):
        model.posterior().predict_proba(torch.rand(3, 5, dtype=torch.float64))
