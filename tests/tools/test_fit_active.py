"""A batched fit evaluates only the models still running, with the same optima as fitting each alone."""

from __future__ import annotations

import pytest
import torch

import torchgp.optim._batched as lockstep
from tests.tools._batched_models import batched_mll
from torchgp.optim._active import SubBatch
from torchgp.optim.fit import fit

B, N, D = 4, 12, 2


def _data():
    g = torch.Generator().manual_seed(3)
    X = torch.rand(B, N, D, generator=g, dtype=torch.float64)
    # members of very different difficulty: their L-BFGS-B runs end at different rounds
    y = torch.sin((2 + 3 * torch.arange(B, dtype=torch.float64)[:, None]) * X[..., 0]) + X[..., 1] ** 2
    y = y + 0.05 * torch.randn(B, N, generator=g, dtype=torch.float64)
    return X, y


def _value(mll):
    m = mll.model
    with torch.no_grad():
        return mll(m(*m.train_inputs), m.train_targets)


def _sizes_seen(monkeypatch):
    """Record how many models each subset evaluation served."""
    seen = []
    inner = lockstep._evaluate_subset

    def spy(run, vec, x_full, blocks, asked, models, loss_vector, subset):
        out = inner(run, vec, x_full, blocks, asked, models, loss_vector, subset)
        seen.append((len(asked), out[1] is not None))
        return out

    monkeypatch.setattr(lockstep, "_evaluate_subset", spy)
    return seen


def test_subset_rounds_give_each_model_its_own_optimum(monkeypatch):
    X, y = _data()
    seen = _sizes_seen(monkeypatch)
    batched = batched_mll(X, y, torch.Size([B]))
    r = fit(batched, progress=False)
    assert seen and all(k < B for k, _ in seen)  # some rounds served only the models still running
    assert all(kept for _, kept in seen)  # the check against the whole batch passed: the subset stayed in use
    values = _value(batched)
    for i in range(B):
        alone = batched_mll(X[i], y[i])
        fit(alone, progress=False)
        assert float(values[i]) == pytest.approx(float(_value(alone)), abs=1e-6)
    assert r.loss == pytest.approx(-float(values.sum()), abs=1e-8)


def test_subset_evaluation_equals_the_whole_batch_and_restores_everything():
    X, y = _data()
    mll = batched_mll(X, y, torch.Size([B]))
    model = mll.model
    with torch.no_grad():
        for p in mll.parameters():
            p.add_(0.1 * torch.randn_like(p))
    params = [p for p in mll.parameters() if p.requires_grad]
    before = {n: (p, p.detach().clone()) for n, p in mll.named_parameters()}
    inputs, targets = model.train_inputs, model.train_targets
    full = -mll(model(*model.train_inputs), model.train_targets)
    full.sum().backward()
    ref = torch.cat([p.grad.reshape(B, -1) for p in params], 1)
    for p in params:
        p.grad = None
    sub = SubBatch.build(mll, model, params, B)
    assert sub is not None
    idx = [1, 3]
    with sub.only(idx) as grads:
        assert model.covar_module.batch_shape == torch.Size([2]) and model.train_inputs[0].shape[0] == 2
        losses = -mll(model(*model.train_inputs), model.train_targets)
        losses.sum().backward()
        g = torch.from_numpy(grads())
    torch.testing.assert_close(losses.detach(), full.detach()[idx], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(g, ref[idx], rtol=1e-10, atol=1e-12)
    # the user's parameters were neither replaced nor written, and got no gradient
    for n, p in mll.named_parameters():
        assert p is before[n][0] and torch.equal(p.detach(), before[n][1]) and p.grad is None
    assert model.train_inputs is inputs and model.train_targets is targets
    assert model.covar_module.batch_shape == torch.Size([B]) and model.likelihood.noise_covar.batch_shape == (B,)


def test_subset_is_put_back_when_the_evaluation_raises():
    X, y = _data()
    mll = batched_mll(X, y, torch.Size([B]))
    model = mll.model
    params = [p for p in mll.parameters() if p.requires_grad]
    sub = SubBatch.build(mll, model, params, B)
    raw = model.covar_module.base_kernel.raw_lengthscale
    with pytest.raises(RuntimeError, match="boom"), sub.only([0]):
        assert model.covar_module.base_kernel.raw_lengthscale is not raw
        raise RuntimeError("boom")
    assert model.covar_module.base_kernel.raw_lengthscale is raw
    assert model.train_inputs[0].shape[0] == B and model.mean_module.batch_shape == (B,)


def test_no_subset_where_a_per_member_tensor_cannot_be_identified():
    X, y = _data()
    mll = batched_mll(X, y, torch.Size([B]))
    params = [p for p in mll.parameters() if p.requires_grad]
    assert SubBatch.build(mll, mll.model, params, B) is not None
    mll.model.mean_module.offsets = torch.zeros(B, N, dtype=torch.float64)  # a plain per-member attribute
    assert SubBatch.build(mll, mll.model, params, B) is None
    del mll.model.mean_module.offsets
    mll.model.covar_module.register_buffer("table", torch.zeros(3, B))  # leading dim not the batch
    assert SubBatch.build(mll, mll.model, params, B) is None


def test_a_forward_hook_keeps_the_whole_batch(monkeypatch):
    X, y = _data()
    seen = _sizes_seen(monkeypatch)
    mll = batched_mll(X, y, torch.Size([B]))
    shapes = []
    mll.model.covar_module.register_forward_pre_hook(lambda mod, args: shapes.append(args[0].shape[0]))
    fit(mll, progress=False)
    assert not seen and set(shapes) == {B}


def test_with_priors_each_member_keeps_its_own_prior(monkeypatch):
    # ExactMarginalLogLikelihood adds the batch's summed log-prior to every member; the lockstep counts each
    # member's own share only, so each optimum is that of fitting the member alone with its prior
    from torchgp.priors import GammaPrior

    X, y = _data()
    seen = _sizes_seen(monkeypatch)
    mll = batched_mll(X, y, torch.Size([B]))
    mll.model.covar_module.base_kernel.register_prior("lengthscale_prior", GammaPrior(3.0, 6.0), "lengthscale")
    fit(mll, progress=False)
    assert seen and all(kept for _, kept in seen)
    for i in (0, B - 1):
        alone = batched_mll(X[i], y[i])
        alone.model.covar_module.base_kernel.register_prior("lengthscale_prior", GammaPrior(3.0, 6.0), "lengthscale")
        fit(alone, progress=False)
        torch.testing.assert_close(
            mll.model.covar_module.base_kernel.lengthscale[i].detach(),
            alone.model.covar_module.base_kernel.lengthscale.detach().reshape(1, D),
            rtol=1e-4,
            atol=1e-6,
        )
        assert float(_value(alone)) == pytest.approx(float(_value(mll)[i]) - _others_prior(mll, i) / N, abs=1e-6)


def _others_prior(mll, i):
    """The log-prior of every member but ``i`` (what the batched MLL adds to member i's value)."""
    kernel = mll.model.covar_module.base_kernel
    with torch.no_grad():
        log_p = kernel.lengthscale_prior.log_prob(kernel.lengthscale).reshape(B, -1).sum(-1)
    return float(log_p.sum() - log_p[i])
