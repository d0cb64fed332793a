"""The lockstep on L-BFGS-B states: each model's points are minimize's, and the threaded fallback agrees."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from tests.tools._batched_models import batched_mll
from torchgp.errors import NotPSDError
from torchgp.optim import _lbfgsb
from torchgp.optim._scipy_runner import lbfgsb_options
from torchgp.optim.fit import fit

pytestmark = pytest.mark.skipif(not _lbfgsb.available(), reason="scipy's L-BFGS-B core cannot be driven here")

B, N, D = 3, 14, 2


def _data():
    g = torch.Generator().manual_seed(5)
    X = torch.rand(B, N, D, generator=g, dtype=torch.float64)
    y = torch.sin((2 + 2 * torch.arange(B, dtype=torch.float64)[:, None]) * X[..., 0]) + X[..., 1]
    return X, y + 0.1 * torch.randn(B, N, generator=g, dtype=torch.float64)


def _params(mll):
    return {n: p.detach().clone() for n, p in mll.named_parameters()}


def _value(mll):
    m = mll.model
    with torch.no_grad():
        return mll(m(*m.train_inputs), m.train_targets)


class _Recording(_lbfgsb.LBFGSB):
    """An L-BFGS-B state that keeps every request and the answer it was told."""

    made: list = []

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.trace = []
        self.options = kwargs
        _Recording.made.append(self)

    def tell(self, f, g):
        self.trace.append((self.x.copy(), f, np.array(g)))
        super().tell(f, g)


def test_each_models_points_are_minimizes_given_the_same_values(monkeypatch):
    _Recording.made = []
    monkeypatch.setattr(_lbfgsb, "LBFGSB", _Recording)
    X, y = _data()
    mll = batched_mll(X, y, torch.Size([B]))
    r = fit(mll, progress=False)
    states = _Recording.made
    assert len(states) == B and r.success
    for state in states:
        trace = iter(state.trace)

        def replay(x, trace=trace):
            x_asked, f, g = next(trace)
            np.testing.assert_array_equal(x, x_asked)  # minimize asks for the very point the state asked for
            return f, g

        options = {k: v for k, v in state.options.items() if k != "callback"}
        res = minimize(replay, state.trace[0][0], jac=True, method="L-BFGS-B", options=options)
        assert next(trace, None) is None and res.nfev == len(state.trace)
        assert (res.nit, res.status, res.message) == (state.nit, state.status, state.message)
    assert states[0].options["maxiter"] == lbfgsb_options(1000, 1e-9, 1e-5)["maxiter"]
    # and each model's optimum is that of fitting it alone
    values = _value(mll)
    for i in range(B):
        alone = batched_mll(X[i], y[i])
        fit(alone, progress=False)
        assert float(values[i]) == pytest.approx(float(_value(alone)), abs=1e-6)


def _fit_both_ways(monkeypatch, make, **kwargs):
    """``fit`` on two fresh copies: once through the L-BFGS-B states, once through the threaded ``minimize``."""
    out = []
    for usable in (True, False):
        monkeypatch.setattr(_lbfgsb, "available", lambda usable=usable: usable)
        mll = make()
        out.append((fit(mll, progress=False, **kwargs), _params(mll)))
    monkeypatch.undo()
    return out


def _assert_identical(a, b):
    (ra, pa), (rb, pb) = a, b
    for name in pa:
        assert torch.equal(pa[name], pb[name]), name
    assert ra.loss == rb.loss and ra.history == rb.history
    assert (ra.iterations, ra.function_evals, ra.stop_reason, ra.message) == (
        rb.iterations,
        rb.function_evals,
        rb.stop_reason,
        rb.message,
    )


@pytest.mark.parametrize("kwargs", [{}, {"maxiter": 6}, {"patience": 1, "ftol": 1e-4}])
def test_fallback_to_threads_gives_the_same_fit(monkeypatch, kwargs):
    X, y = _data()
    a, b = _fit_both_ways(monkeypatch, lambda: batched_mll(X, y, torch.Size([B])), **kwargs)
    _assert_identical(a, b)
    if "maxiter" in kwargs:
        assert a[0].stop_reason == "maxiter" and a[0].iterations == 6
    if "patience" in kwargs:
        assert a[0].stop_reason == "patience"


def test_single_model_fit_is_the_same_through_the_state_and_minimize(monkeypatch):
    X, y = _data()
    a, b = _fit_both_ways(monkeypatch, lambda: batched_mll(X[0], y[0]))
    _assert_identical(a, b)
    assert a[0].message.startswith("CONVERGENCE")


def _failing_at(mll, calls_to_fail):
    """Make the mean raise NotPSDError at the given evaluation numbers (a trial point that cannot be factorised)."""
    inner = mll.model.mean_module.forward
    count = [0]

    def forward(x):
        count[0] += 1
        if count[0] in calls_to_fail:
            raise NotPSDError("injected")
        return inner(x)

    mll.model.mean_module.forward = forward
    return mll


@pytest.mark.parametrize("batched", [True, False])
def test_failed_trial_points_backtrack_the_same_way(monkeypatch, batched):
    X, y = _data()

    def make():
        mll = batched_mll(X, y, torch.Size([B])) if batched else batched_mll(X[1], y[1])
        return _failing_at(mll, {3, 4})

    a, b = _fit_both_ways(monkeypatch, make)
    _assert_identical(a, b)
    assert any("backtracked" in w for w in a[0].warnings) and a[0].success


@pytest.mark.parametrize("usable", [True, False])
def test_bad_start_is_reraised_and_interrupt_keeps_the_best(monkeypatch, usable):
    monkeypatch.setattr(_lbfgsb, "available", lambda: usable)
    X, y = _data()
    mll = _failing_at(batched_mll(X, y, torch.Size([B])), set(range(1, 10)))
    before = threading.active_count()
    with pytest.raises(NotPSDError, match="every start failed"):
        fit(mll, progress=False, max_jitter_retries=1)
    assert threading.active_count() == before

    mll = batched_mll(X, y, torch.Size([B]))
    inner = mll.model.mean_module.forward
    calls = []

    def interrupting(x):
        calls.append(threading.active_count())
        if len(calls) == 5:
            raise KeyboardInterrupt
        return inner(x)

    mll.model.mean_module.forward = interrupting
    r = fit(mll, progress=False)
    assert r.stop_reason == "interrupted"
    if usable:  # the states live in this thread: no worker threads at all
        assert set(calls) == {before}
    mll.model.mean_module.forward = inner
    assert r.loss == pytest.approx(-float(_value(mll).sum()), abs=1e-8)


def test_progress_bar_counts_rounds(monkeypatch):
    tqdm_auto = pytest.importorskip("tqdm.auto")
    bars = []

    class Bar:
        def __init__(self, total=None, **kwargs):
            self.n, self.postfix = 0, None
            bars.append(self)

        def update(self, k):
            self.n += k

        def set_postfix(self, **kwargs):
            self.postfix = kwargs

        def close(self):
            pass

    monkeypatch.setattr(tqdm_auto, "tqdm", Bar)
    X, y = _data()
    r = fit(batched_mll(X, y, torch.Size([B])), progress=True, maxiter=5)
    (bar,) = bars
    assert bar.n == r.function_evals > 5  # one tick per batched evaluation
    assert float(bar.postfix["loss"]) == pytest.approx(r.loss, rel=1e-4)
