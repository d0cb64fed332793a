"""get_fantasy_model: block Cholesky update equals refitting with the extra data (float64, 1e-8)."""

from __future__ import annotations

import pytest
import torch

import torchgp
from tests._tol import assert_close
from tests.models._gpytorch_ref import gpytorch_model
from tests.models._models import ExactModel, data, make_model
from torchgp.models.fantasy import cholesky_append

HYPERS = {
    "covar_module.base_kernel.lengthscale": 0.7,
    "covar_module.outputscale": 1.3,
    "mean_module.constant": 0.2,
}


def _refit(X, y, likelihood=None, noise=0.05):
    lik = torchgp.likelihoods.GaussianLikelihood() if likelihood is None else likelihood
    batch = y.shape[:-1]
    model = ExactModel(X, y, lik).double()
    hypers = dict(HYPERS)
    if likelihood is None:
        hypers["likelihood.noise"] = noise
    model.initialize(**hypers)
    assert model.train_targets.shape[:-1] == batch
    return model.eval()


def _test_x(t=7):
    return torch.linspace(-2.2, 2.2, t, dtype=torch.float64).unsqueeze(-1)


def _assert_same_predictions(fant, ref, Xs):
    with torch.no_grad():
        a, b = fant(Xs), ref(Xs)
        assert_close(a.mean, b.mean)
        assert_close(a.variance, b.variance)
        assert_close(a.covariance_matrix, b.covariance_matrix)


def test_cholesky_append_equals_refactorising():
    g = torch.Generator().manual_seed(0)
    A0 = torch.randn(12, 12, generator=g, dtype=torch.float64)
    A = A0 @ A0.T + 12 * torch.eye(12, dtype=torch.float64)
    L = torch.linalg.cholesky(A[:9, :9])
    assert_close(cholesky_append(L, A[:9, 9:], A[9:, 9:]), torch.linalg.cholesky(A))


def test_single_fantasy_equals_refit():
    model, X, y = make_model(n=15)
    model.eval()
    Xs = _test_x()
    with torch.no_grad():
        model(Xs)  # the cached factor exists and is updated, not rebuilt
    Xn, yn = data(n=3, seed=7)
    fant = model.get_fantasy_model(Xn, yn)
    post = fant._cache[2]
    assert post.L.shape == (18, 18)
    assert_close(post.L[:15, :15], model._cache[2].L)  # the old factor is the top-left block
    ref = _refit(torch.cat([X, Xn]), torch.cat([y, yn]))
    _assert_same_predictions(fant, ref, Xs)
    with torch.no_grad():
        fant(Xs)
    assert fant._cache[2] is post  # the updated factor was used, not replaced
    assert model.train_inputs[0].shape == (15, 1) and fant.train_inputs[0].shape == (18, 1)


def test_batched_fantasies_equal_batch_refit():
    model, X, y = make_model(n=15)
    model.eval()
    Xn, _ = data(n=2, seed=8)
    g = torch.Generator().manual_seed(3)
    yn = torch.randn(4, 2, generator=g, dtype=torch.float64)  # f = 4 fantasies at shared inputs
    fant = model.get_fantasy_model(Xn, yn)
    assert fant.train_inputs[0].shape == (4, 17, 1) and fant.train_targets.shape == (4, 17)
    assert fant._cache[2].L.shape == (17, 17)  # one factor shared by the fantasies
    ref = _refit(torch.cat([X, Xn]).expand(4, 17, 1), torch.cat([y.expand(4, 15), yn], -1))
    Xs = _test_x()
    _assert_same_predictions(fant, ref, Xs)
    with torch.no_grad():
        assert fant(Xs).mean.shape == (4, 7)
        one = model.get_fantasy_model(Xn, yn[2])(Xs)
        assert_close(fant(Xs).mean[2], one.mean)


def test_batched_fantasies_at_their_own_inputs():
    model, X, y = make_model(n=15)
    model.eval()
    g = torch.Generator().manual_seed(4)
    Xn = torch.rand(3, 2, 1, generator=g, dtype=torch.float64) * 4 - 2
    yn = torch.randn(3, 2, generator=g, dtype=torch.float64)
    fant = model.get_fantasy_model(Xn, yn)
    assert fant._cache[2].L.shape == (3, 17, 17)
    ref = _refit(torch.cat([X.expand(3, 15, 1), Xn], -2), torch.cat([y.expand(3, 15), yn], -1))
    _assert_same_predictions(fant, ref, _test_x())


def test_fixed_noise_fantasy_equals_refit():
    X, y = data(n=15)
    noise = torch.linspace(0.01, 0.1, 15, dtype=torch.float64)
    model = _refit(X, y, torchgp.likelihoods.FixedNoiseGaussianLikelihood(noise=noise))
    Xn, yn = data(n=3, seed=9)
    noise_n = torch.tensor([0.2, 0.03, 0.5], dtype=torch.float64)
    fant = model.get_fantasy_model(Xn, yn, noise=noise_n)
    assert_close(fant.likelihood.noise, torch.cat([noise, noise_n]))
    ref = _refit(
        torch.cat([X, Xn]),
        torch.cat([y, yn]),
        torchgp.likelihoods.FixedNoiseGaussianLikelihood(noise=torch.cat([noise, noise_n])),
    )
    _assert_same_predictions(fant, ref, _test_x())
    with pytest.raises(torchgp.errors.InputError, match="noise="):
        model.get_fantasy_model(Xn, yn)


def test_fantasy_cache_stays_fresh_after_a_change():
    model, X, y = make_model(n=15)
    model.eval()
    Xn, yn = data(n=3, seed=7)
    fant = model.get_fantasy_model(Xn, yn)
    fant.initialize(**{"covar_module.base_kernel.lengthscale": 0.4})
    ref = _refit(torch.cat([X, Xn]), torch.cat([y, yn]))
    ref.initialize(**{"covar_module.base_kernel.lengthscale": 0.4})
    _assert_same_predictions(fant, ref, _test_x())


def test_fantasy_on_the_iterative_path_refactorises():
    model, X, y = make_model(n=15)
    model.eval()
    Xn, yn = data(n=3, seed=7)
    with torchgp.settings.max_cholesky_size(10):
        fant = model.get_fantasy_model(Xn, yn)
        assert fant._cache is None
        ref = _refit(torch.cat([X, Xn]), torch.cat([y, yn]))
        with torch.no_grad():
            torch.testing.assert_close(fant(_test_x()).mean, ref(_test_x()).mean, rtol=1e-5, atol=1e-6)


def test_fantasy_equals_gpytorch():
    model, X, y = make_model(n=15)
    model.eval()
    ref = gpytorch_model(X, y)
    Xs = _test_x()
    Xn, _ = data(n=2, seed=8)
    yn = torch.randn(3, 2, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    with torch.no_grad():
        ref(Xs)  # GPyTorch needs its test caches before fantasising
        theirs = ref.get_fantasy_model(Xn, yn)(Xs)
        ours = model.get_fantasy_model(Xn, yn)(Xs)
    assert ours.mean.shape == theirs.mean.shape == (3, 7)
    assert_close(ours.mean, theirs.mean)
    assert_close(ours.variance, theirs.variance)


def test_fantasy_shape_errors():
    model, _, _ = make_model(n=10)
    model.eval()
    with pytest.raises(torchgp.errors.ShapeError, match="q = 3"):
        model.get_fantasy_model(torch.zeros(3, 1, dtype=torch.float64), torch.zeros(2, dtype=torch.float64))


def test_fantasies_of_a_batch_of_gps():
    """targets (f, b, q) for a model with batch b = 2: an (f, b) batch of fantasy models."""
    X, y = data(n=12, batch=(2,), seed=1)
    model = _refit(X, y)
    Xn, _ = data(n=2, batch=(2,), seed=2)
    yn = torch.randn(3, 2, 2, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    fant = model.get_fantasy_model(Xn, yn)
    assert fant.train_targets.shape == (3, 2, 14)
    assert fant._cache[2].L.shape == (2, 14, 14)  # shared by the 3 fantasies
    ref = _refit(torch.cat([X, Xn], -2).expand(3, 2, 14, 1), torch.cat([y.expand(3, 2, 12), yn], -1))
    _assert_same_predictions(fant, ref, _test_x(5))
