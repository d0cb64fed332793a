"""Incremental fantasies of multitask models equal the model refitted on old + new data (same hyperparameters)."""

from __future__ import annotations

import copy

import pytest
import torch

import torchgp
from tests._tol import assert_close
from tests.multitask._models import D, batch_independent_model, copy_parameters, icm_model, toy_data
from torchgp.models.multitask_fantasy import KroneckerFantasyPosterior


def _predict(model, Xs):
    model.eval()
    with torch.no_grad():
        f = model(Xs)
        return f.mean, f.covariance_matrix, f.variance, model.likelihood(f).variance


def _refit(model, X_all, Y_all):
    ref = copy.deepcopy(model)
    ref._cache = None
    ref.set_train_data(X_all, Y_all, strict=False)
    return ref


NOISES = {"per_task": dict(lik_rank=0), "global": dict(lik_rank=0, has_task_noise=False), "rank_1": dict(lik_rank=1)}


@pytest.mark.parametrize("noise", list(NOISES))
@pytest.mark.parametrize("interleaved", [True, False])
def test_kronecker_fantasy_equals_the_refitted_model(interleaved, noise, monkeypatch):
    X, Y = toy_data(n=10, t=3)
    model = icm_model(torchgp, X, Y, rank=2, interleaved=interleaved, **NOISES[noise])
    copy_parameters(model, icm_model(torchgp, X, Y, rank=2, interleaved=interleaved, **NOISES[noise]), seed=4)
    Xs = torch.linspace(-0.1, 1.1, 6, dtype=D).unsqueeze(-1)
    _predict(model, Xs)  # the cached Kronecker posterior
    g = torch.Generator().manual_seed(7)
    Xq = torch.rand(2, 1, generator=g, dtype=D)
    Yq = torch.randn(2, 3, generator=g, dtype=D)
    calls = []
    real_eigh = torch.linalg.eigh
    monkeypatch.setattr(torch.linalg, "eigh", lambda *a, **k: calls.append(1) or real_eigh(*a, **k))
    fant = model.get_fantasy_model(Xq, Yq)
    assert isinstance(fant._cache[2], KroneckerFantasyPosterior)
    got = _predict(fant, Xs)
    assert not calls  # no eigendecomposition: the old factors are updated, not recomputed
    monkeypatch.undo()
    expected = _predict(_refit(model, torch.cat([X, Xq]), torch.cat([Y, Yq])), Xs)
    for a, b in zip(got, expected):
        assert_close(a, b)


def test_a_fantasy_batch_shares_the_update():
    X, Y = toy_data(n=8, t=2)
    model = icm_model(torchgp, X, Y, rank=1)
    copy_parameters(model, icm_model(torchgp, X, Y, rank=1), seed=5)
    Xs = torch.rand(4, 1, generator=torch.Generator().manual_seed(1), dtype=D)
    _predict(model, Xs)
    Xq = torch.tensor([[0.3], [0.9], [0.55]], dtype=D)
    Yq = torch.randn(4, 3, 2, generator=torch.Generator().manual_seed(2), dtype=D)  # 4 fantasies
    fant = model.get_fantasy_model(Xq, Yq)
    assert isinstance(fant._cache[2], KroneckerFantasyPosterior)
    mean, cov, _, _ = _predict(fant, Xs)
    assert mean.shape == (4, 4, 2)
    for k in range(4):
        m, c, _, _ = _predict(_refit(model, torch.cat([X, Xq]), torch.cat([Y, Yq[k]])), Xs)
        assert_close(mean[k], m)
        assert_close(cov.expand(4, *cov.shape[-2:])[k], c)


def test_the_fantasy_model_refactorises_once_its_hyperparameters_change():
    X, Y = toy_data(n=8, t=2)
    model = icm_model(torchgp, X, Y, rank=1)
    Xs = torch.rand(3, 1, generator=torch.Generator().manual_seed(3), dtype=D)
    _predict(model, Xs)
    Xq, Yq = torch.tensor([[0.4]], dtype=D), torch.tensor([[0.1, -0.2]], dtype=D)
    fant = model.get_fantasy_model(Xq, Yq)
    with torch.no_grad():
        fant.covar_module.data_covar_module.lengthscale = 0.3
    got = _predict(fant, Xs)
    ref = _refit(model, torch.cat([X, Xq]), torch.cat([Y, Yq]))
    with torch.no_grad():
        ref.covar_module.data_covar_module.lengthscale = 0.3
    for a, b in zip(got, _predict(ref, Xs)):
        assert_close(a, b)


def test_batch_independent_and_hadamard_fantasies_equal_refitted_models():
    X, Y = toy_data(n=8, t=2)
    model = batch_independent_model(torchgp, X, Y)
    Xs = torch.rand(3, 1, generator=torch.Generator().manual_seed(4), dtype=D)
    _predict(model, Xs)
    Xq, Yq = torch.tensor([[0.2], [0.7]], dtype=D), torch.tensor([[0.1, -0.2], [0.3, 0.0]], dtype=D)
    fant = model.get_fantasy_model(Xq, Yq)
    assert fant._cache[2].kind == "blocks" and fant._cache[2].n == 10  # updated, not left to refit
    got = _predict(fant, Xs)
    for a, b in zip(got, _predict(_refit(model, torch.cat([X, Xq]), torch.cat([Y, Yq])), Xs)):
        assert_close(a, b)
    fants = model.get_fantasy_model(Xq, torch.stack([Yq, -Yq]))  # a batch of two fantasies
    for k, sign in enumerate((1, -1)):
        expected = _predict(_refit(model, torch.cat([X, Xq]), torch.cat([Y, sign * Yq])), Xs)
        assert_close(_predict(fants, Xs)[0][k], expected[0])
    # Hadamard: one task per observation, the single-output block-Cholesky update
    from torchgp.models.builders import HadamardGPModel

    i = torch.arange(8) % 2
    had = HadamardGPModel(X, i, Y[torch.arange(8), i], num_tasks=2, rank=1).double()
    had.eval()
    Is = torch.tensor([[0], [1], [1]])
    with torch.no_grad():
        had(Xs, Is)
        fant = had.get_fantasy_model((Xq, torch.tensor([[1], [0]])), torch.tensor([0.3, -0.1], dtype=D))
        f = fant(Xs, Is)
        ref = HadamardGPModel(
            torch.cat([X, Xq]), torch.cat([i, torch.tensor([1, 0])]), torch.cat([Y[torch.arange(8), i],
            torch.tensor([0.3, -0.1], dtype=D)]), num_tasks=2, rank=1,
        ).double()  # fmt: skip
        ref.load_state_dict(had.state_dict())
        ref.eval()
        r = ref(Xs, Is)
    assert_close(f.mean, r.mean)
    assert_close(f.covariance_matrix, r.covariance_matrix)
