"""Caches that cannot go stale (variational ``chol(K_zz)``, SGPR's factorisation) and forward hooks."""

from __future__ import annotations

import pytest
import torch

import torchgp
import torchgp.models.sgpr as sgpr_module
import torchgp.variational.variational_strategy as vs_module
from tests._tol import assert_close
from tests.variational._helpers import HYPERS, SVGP, SGPRModel, toy_data
from torchgp.variational import UnwhitenedVariationalStrategy, VariationalStrategy


def _count_cholesky(monkeypatch, module):
    calls = {"n": 0}
    real = module.psd_safe_cholesky

    def counting(*args, **kwargs):
        calls["n"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(module, "psd_safe_cholesky", counting)
    return calls


def _svgp(strategy_cls, seed=0):
    torch.manual_seed(seed)
    X, _ = toy_data(n=12)
    model = SVGP(X[:5].clone(), strategy_cls=strategy_cls).double()
    model.initialize(**HYPERS)
    with torch.no_grad():
        model.variational_strategy.variational_params_initialized.fill_(1)
        q = model.variational_strategy._variational_distribution
        q.variational_mean.normal_()
        q.chol_variational_covar.copy_(torch.eye(5, dtype=torch.float64) * 0.5 + 0.1 * torch.randn(5, 5).tril())
    return model, X


@pytest.mark.parametrize(
    "edit",
    [
        lambda m: m.covar_module.base_kernel.raw_lengthscale.data.fill_(0.3),
        lambda m: m.covar_module.raw_outputscale.data.__setitem__((), -1.0),
        lambda m: m.variational_strategy.inducing_points.data.mul_(1.5),
        lambda m: m.mean_module.raw_constant.data.fill_(2.0),
    ],
)
def test_unwhitened_kl_sees_data_edits(edit):
    model, X = _svgp(UnwhitenedVariationalStrategy)
    model(X)  # fills the K_zz cache
    with torch.no_grad():
        edit(model)
    kl = model.variational_strategy.kl_divergence()
    model.variational_strategy._cache = None
    fresh = model.variational_strategy.kl_divergence()
    assert_close(kl, fresh)


def test_kl_reuses_the_forward_factor(monkeypatch):
    model, X = _svgp(UnwhitenedVariationalStrategy)
    calls = _count_cholesky(monkeypatch, vs_module)
    model(X)
    model.variational_strategy.kl_divergence()
    assert calls["n"] == 1


@pytest.mark.parametrize("strategy_cls", [VariationalStrategy, UnwhitenedVariationalStrategy])
def test_eval_predictions_reuse_and_refresh_the_factor(monkeypatch, strategy_cls):
    model, X = _svgp(strategy_cls)
    model.eval()
    calls = _count_cholesky(monkeypatch, vs_module)
    with torch.no_grad():
        first = model(X).mean
        assert_close(model(X).mean, first)
        assert calls["n"] == 1  # the second prediction did not refactorise K_zz
        model.covar_module.base_kernel.raw_lengthscale.data.fill_(-1.0)
        changed = model(X).mean
    assert calls["n"] == 2
    model.variational_strategy._cache = None
    with torch.no_grad():
        assert_close(model(X).mean, changed)
    assert not torch.allclose(first, changed)


def test_training_steps_never_reuse_a_freed_graph():
    model, X = _svgp(UnwhitenedVariationalStrategy)
    lik = torchgp.likelihoods.GaussianLikelihood().double()
    mll = torchgp.mlls.VariationalELBO(lik, model, num_data=X.shape[0])
    y = torch.sin(3 * X).squeeze(-1)
    for _ in range(2):  # nothing changes between the steps: the key is equal, the graph is gone
        loss = -mll(model(X), y)
        loss.backward()


def _sgpr(seed=0):
    X, y = toy_data(n=20, seed=seed)
    lik = torchgp.likelihoods.GaussianLikelihood().double()
    model = SGPRModel(X, y, lik, X[:6].clone()).double()
    model.initialize(**HYPERS)
    lik.noise = 0.05
    return model.eval(), X


def test_sgpr_second_prediction_does_not_refactorise(monkeypatch):
    model, X = _sgpr()
    calls = _count_cholesky(monkeypatch, sgpr_module)
    with torch.no_grad():
        first = model(X[:4])
        n_first = calls["n"]
        second = model(X[:7])
    assert n_first == 2  # chol(K_zz) and chol(B)
    assert calls["n"] == n_first  # the second prediction reuses both factors
    assert_close(second.mean[:4], first.mean)


@pytest.mark.parametrize(
    "edit",
    [
        lambda m: m.covar_module.base_kernel.raw_lengthscale.data.fill_(0.2),
        lambda m: m.likelihood.noise_covar.raw_noise.data.fill_(-1.0),
        lambda m: m.train_targets.data.mul_(-1.0),
        lambda m: m.train_inputs[0].data.add_(0.1),
        lambda m: m.inducing_points.data.mul_(0.5),
    ],
)
def test_sgpr_eval_cache_sees_data_edits(edit):
    model, X = _sgpr()
    with torch.no_grad():
        before = model(X[:5]).mean
        edit(model)
        cached = model(X[:5])
        model._cache = None
        fresh = model(X[:5])
    assert_close(cached.mean, fresh.mean)
    assert_close(cached.variance, fresh.variance)
    assert not torch.allclose(before, fresh.mean)


def test_sgpr_prediction_gradient_wrt_inputs_with_cache():
    model, X = _sgpr()
    model(X[:3])  # cache built under grad (detached by default)
    x = X[:3].clone().requires_grad_(True)
    model(x).mean.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def _model_factories():
    return {
        "svgp": lambda: _svgp(VariationalStrategy)[0],
        "sgpr": lambda: _sgpr()[0],
    }


@pytest.mark.parametrize("name", ["svgp", "sgpr"])
@pytest.mark.parametrize("train", [True, False])
def test_forward_hooks_fire(name, train):
    model = _model_factories()[name]()
    model.train(train)
    X, _ = toy_data(n=4, seed=1)
    seen = []
    h1 = model.register_forward_pre_hook(lambda mod, args: seen.append(("pre", args[0].shape)))
    h2 = model.register_forward_hook(lambda mod, args, out: seen.append(("post", type(out).__name__)))
    out = model(X)
    assert seen == [("pre", X.shape), ("post", "MultivariateNormal")]
    h1.remove(), h2.remove()
    model(X)
    assert len(seen) == 2
    # a hook may replace the output, a pre-hook the inputs, a kwargs hook sees the keyword arguments
    h3 = model.register_forward_hook(lambda mod, args, out: out.mean)
    assert torch.equal(model(X), out.mean)
    h3.remove()
    h4 = model.register_forward_pre_hook(lambda mod, args: (args[0][:2],))
    assert model(X).mean.shape == (2,)
    h4.remove()
    kw = []
    h5 = model.register_forward_hook(lambda mod, args, kwargs, out: kw.append(dict(kwargs)), with_kwargs=True)
    model(X)
    h5.remove()
    assert kw == [{}]


def test_always_call_hook_runs_when_the_call_fails():
    model = _svgp(VariationalStrategy)[0]
    seen = []
    model.register_forward_hook(lambda mod, args, out: seen.append(out), always_call=True)
    with pytest.raises(torchgp.errors.ShapeError):
        model(torch.rand(3, 4, dtype=torch.float64))
    assert seen == [None]


def test_global_hooks_fire_and_variational_gp_alias():
    model = _svgp(VariationalStrategy)[0]
    seen = []
    handle = torch.nn.modules.module.register_module_forward_hook(
        lambda mod, args, out: seen.append(type(mod).__name__) if mod is model else None
    )
    try:
        model(torch.rand(3, 1, dtype=torch.float64))
    finally:
        handle.remove()
    assert seen == ["SVGP"]
    assert torchgp.models.VariationalGP is torchgp.models.ApproximateGP


def test_models_with_graph_holding_caches_deep_copy():
    import copy

    model, X = _sgpr()
    with torchgp.settings.detach_test_caches(False):
        model(X[:3])  # cache holds a graph
    assert model._cache is not None and model._cache[1].requires_grad
    clone = copy.deepcopy(model)
    assert clone._cache is None
    with torch.no_grad():
        assert_close(clone(X[:3]).mean, model(X[:3]).mean)
    svgp, Xs = _svgp(UnwhitenedVariationalStrategy)
    svgp(Xs)
    assert copy.deepcopy(svgp).variational_strategy._cache is None


def test_sgpr_gradient_through_an_undetached_prediction():
    model, X = _sgpr()
    ls = model.covar_module.base_kernel.raw_lengthscale
    with torchgp.settings.detach_test_caches(False):
        for _ in range(2):  # the second call must rebuild (the first graph was freed by backward)
            ls.grad = None
            model(X[:3]).mean.sum().backward()
            assert ls.grad is not None and torch.isfinite(ls.grad).all()


@pytest.mark.parametrize("strategy_cls", [VariationalStrategy, UnwhitenedVariationalStrategy])
def test_cached_factor_follows_the_input_batch_shape(strategy_cls):
    model, X = _svgp(strategy_cls)
    model.eval()
    kl = model.variational_strategy.kl_divergence()
    with torch.no_grad():
        batched = model(X.expand(3, *X.shape))
        single = model(X)
    assert batched.mean.shape == (3, 12) and single.mean.shape == (12,)
    assert_close(batched.mean[1], single.mean)
    model(X.expand(2, *X.shape))  # the factor now has an input batch: the KL must not take it
    assert model.variational_strategy.kl_divergence().shape == kl.shape == ()
    assert_close(model.variational_strategy.kl_divergence(), kl)
