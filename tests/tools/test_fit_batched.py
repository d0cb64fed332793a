"""Fitting a batch of independent models in one call equals fitting each alone."""

from __future__ import annotations

import pytest
import torch

import torchgp
from tests.tools._batched_models import batched_mll
from torchgp.errors import InputError
from torchgp.optim._batched import independent_blocks
from torchgp.optim.fit import fit

B, N, D = 3, 15, 2


def _data():
    g = torch.Generator().manual_seed(0)
    X = torch.rand(B, N, D, generator=g, dtype=torch.float64)
    y = torch.sin(4 * X[..., 0]) * (1 + torch.arange(B, dtype=torch.float64)[:, None]) + X[..., 1]
    y = y + 0.1 * torch.randn(B, N, generator=g, dtype=torch.float64)
    return X, y


def _raw(mll, i=None):
    return {n: (p[i] if i is not None else p).detach().clone() for n, p in mll.named_parameters()}


def _mll_value(mll):
    m = mll.model
    with torch.no_grad():
        return mll(m(*m.train_inputs), m.train_targets)


def test_batched_fit_equals_separate_fits():
    X, y = _data()
    batched = batched_mll(X, y, torch.Size([B]))
    r = fit(batched, progress=False)
    assert r.success and r.message.endswith(f"of {B} models converged")
    values = _mll_value(batched)
    assert values.shape == (B,)
    for i in range(B):
        alone = batched_mll(X[i], y[i])
        r_i = fit(alone, progress=False)
        # the same optimum, model by model (the batch follows each model's own L-BFGS-B iterates)
        assert float(values[i]) == pytest.approx(float(_mll_value(alone)), abs=1e-6)
        for name, value in _raw(alone).items():
            torch.testing.assert_close(_raw(batched, i)[name].reshape(value.shape), value, rtol=1e-4, atol=1e-4)
        assert r.iterations >= r_i.iterations - 2
    assert r.loss == pytest.approx(-float(values.sum()), abs=1e-8)


def test_joint_fit_on_request_reaches_a_worse_or_equal_optimum():
    X, y = _data()
    joint = batched_mll(X, y, torch.Size([B]))
    lockstep = batched_mll(X, y, torch.Size([B]))
    rj = fit(joint, progress=False, batch_independent=False)
    rl = fit(lockstep, progress=False)
    assert "models converged" not in rj.message
    assert rl.loss <= rj.loss + 1e-6


def test_batch_independent_true_needs_batched_parameters():
    X, y = _data()
    single = batched_mll(X[0], y[0])
    with pytest.raises(InputError, match=r"loss of shape \(B,\)"):
        fit(single, progress=False, batch_independent=True)


def test_independent_blocks_positions():
    params = [torch.zeros(3, 2), torch.zeros(3)]
    blocks = independent_blocks(params, [6, 3], torch.zeros(3))
    assert [b.tolist() for b in blocks] == [[0, 1, 6], [2, 3, 7], [4, 5, 8]]
    assert independent_blocks(params, [6, 3], torch.zeros(())) is None
    assert independent_blocks([torch.zeros(2)], [2], torch.zeros(3)) is None


def test_batched_fit_with_restarts_keeps_each_models_parameters_consistent():
    X, y = _data()
    mll = batched_mll(X, y, torch.Size([B]))
    r = fit(mll, restarts=1, seed=0, progress=False)
    assert len(r.restart_losses) == 2
    assert r.loss == pytest.approx(min(r.restart_losses))
    assert r.loss == pytest.approx(-float(_mll_value(mll).sum()), abs=1e-8)


def test_failing_batched_start_raises_and_leaves_no_threads():
    import threading

    from torchgp.errors import NotPSDError

    X, y = _data()
    mll = batched_mll(X, y, torch.Size([B]))

    class Broken(torchgp.means.ConstantMean):
        def forward(self, x):
            raise NotPSDError("always")

    mll.model.mean_module = Broken(batch_shape=torch.Size([B])).double()
    before = threading.active_count()
    with pytest.raises(NotPSDError, match="every start failed"):
        fit(mll, progress=False, max_jitter_retries=1)
    assert threading.active_count() == before


def test_interrupted_batched_fit_keeps_each_models_best():
    X, y = _data()
    mll = batched_mll(X, y, torch.Size([B]))
    calls = []
    inner = mll.model.mean_module.forward

    def interrupting(x):
        calls.append(1)
        if len(calls) == 6:
            raise KeyboardInterrupt
        return inner(x)

    mll.model.mean_module.forward = interrupting
    r = fit(mll, progress=False)
    assert r.stop_reason == "interrupted" and len(calls) == 6
    mll.model.mean_module.forward = inner
    assert r.loss == pytest.approx(-float(_mll_value(mll).sum()), abs=1e-8)
