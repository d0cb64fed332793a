"""``LBFGSB`` asks for exactly the points ``scipy.optimize.minimize(method="L-BFGS-B")`` evaluates."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize

from torchgp.errors import InputError, ShapeError
from torchgp.optim import _lbfgsb
from torchgp.optim._lbfgsb import LBFGSB

pytestmark = pytest.mark.skipif(not _lbfgsb.available(), reason="scipy's L-BFGS-B core cannot be driven here")


def rosenbrock(x):
    a, b = x[:-1], x[1:]
    f = np.sum(100.0 * (b - a * a) ** 2 + (1.0 - a) ** 2)
    g = np.zeros_like(x)
    g[:-1] = -400.0 * a * (b - a * a) - 2.0 * (1.0 - a)
    g[1:] += 200.0 * (b - a * a)
    return f, g


def wrong_gradient(x):
    """A gradient that is not the function's: the line search cannot find descent (scipy's ABNORMAL stop)."""
    return float(np.sum(x**2)), -2.0 * x + 1.0


def scipy_trace(fun, x0, options, callback=None):
    seen = []

    def traced(x):
        seen.append(np.array(x))
        return fun(x)

    res = minimize(traced, x0, jac=True, method="L-BFGS-B", options=options, callback=callback)
    return seen, res


def state_trace(fun, x0, options, callback=None):
    state = LBFGSB(x0, callback=callback, **options)
    seen = []
    while not state.done:
        seen.append(state.x.copy())
        state.tell(*fun(state.x))
    return seen, state


def assert_same_run(fun, x0, options, stop_at=None):
    calls = {"scipy": 0, "state": 0}

    def callback_for(key):
        def callback(xk):
            calls[key] += 1
            if stop_at is not None and calls[key] >= stop_at:
                raise StopIteration

        return callback

    theirs, res = scipy_trace(fun, x0, options, callback_for("scipy"))
    ours, state = state_trace(fun, x0, options, callback_for("state"))
    assert len(ours) == len(theirs) == res.nfev == state.nfev
    for a, b in zip(ours, theirs):
        np.testing.assert_array_equal(a, b)  # bitwise: the same core fed the same values
    assert (state.nit, state.status, state.message) == (res.nit, res.status, res.message)
    np.testing.assert_array_equal(state.x, res.x)
    assert calls["state"] == calls["scipy"]
    return state


@pytest.mark.parametrize("start", [[-1.2, 1.0], [2.0, 2.0, -1.0], [0.5, -0.3, 0.8, 1.5, -2.0]])
def test_rosenbrock_runs_point_for_point_as_minimize(start):
    state = assert_same_run(rosenbrock, np.array(start), {"maxiter": 1000, "ftol": 1e-12, "gtol": 1e-8})
    assert state.status == 0 and state.message.startswith("CONVERGENCE")
    np.testing.assert_allclose(state.x, np.ones(len(start)), atol=1e-4)


@pytest.mark.parametrize(
    "options, status",
    [
        ({"maxiter": 7, "ftol": 1e-12, "gtol": 1e-10}, 1),  # iteration limit
        ({"maxiter": 100, "maxfun": 9, "ftol": 1e-12, "gtol": 1e-10}, 1),  # evaluation limit
        ({"maxiter": 100, "ftol": 1e-12, "gtol": 1e-10, "maxcor": 3, "maxls": 2}, None),  # other memory, line search
    ],
)
def test_limits_and_options_as_minimize(options, status):
    state = assert_same_run(rosenbrock, np.array([-1.2, 1.0, 0.3]), options)
    if status is not None:
        assert state.status == status


def test_callback_halt_as_minimize():
    state = assert_same_run(rosenbrock, np.array([-1.2, 1.0]), {"maxiter": 100}, stop_at=4)
    assert state.nit == 4 and state.status == 99 and "StopIteration" in state.message


def test_failed_line_search_as_minimize():
    state = assert_same_run(wrong_gradient, np.array([0.3, -0.7]), {"maxiter": 50})
    assert state.status == 2 and "ABNORMAL" in state.message


def test_true_return_of_the_callback_halts_and_exceptions_propagate():
    state = LBFGSB(np.array([-1.2, 1.0]), callback=lambda x: True)
    while not state.done:
        state.tell(*rosenbrock(state.x))
    assert state.nit == 1 and state.message == "STOP: CALLBACK REQUESTED HALT"
    with pytest.raises(InputError, match="run has ended"):
        state.tell(0.0, np.zeros(2))
    with pytest.raises(ShapeError, match=r"shape of x, \(2,\)"):
        LBFGSB(np.array([-1.2, 1.0])).tell(0.0, np.zeros(3))
    with pytest.raises(InputError, match="maxls must be positive"):
        LBFGSB(np.zeros(2), maxls=0)

    def boom(x):
        raise KeyError("from the callback")

    state = LBFGSB(np.array([-1.2, 1.0]), callback=boom)
    with pytest.raises(KeyError, match="from the callback"):
        while not state.done:
            state.tell(*rosenbrock(state.x))


def test_requests_are_fresh_arrays():
    state = LBFGSB(np.array([-1.2, 1.0]))
    first = state.x
    first[:] = 99.0  # the caller's own array: the state's start is untouched
    state2 = LBFGSB(np.array([-1.2, 1.0]))
    state.tell(*rosenbrock(np.array([-1.2, 1.0])))
    state2.tell(*rosenbrock(state2.x))
    np.testing.assert_array_equal(state.x, state2.x)


def test_available_refuses_an_older_or_different_core(monkeypatch):
    import scipy
    from scipy.optimize import _lbfgsb as core

    check = _lbfgsb.available.__wrapped__
    assert check()
    monkeypatch.setattr(scipy, "__version__", "1.14.1")
    assert not check()
    monkeypatch.undo()

    def setulb(*args):  # scipy < 1.15's argument list (csave, no ln_task)
        """setulb(m,x,l,u,nbd,f,g,factr,pgtol,wa,iwa,task,iprint,csave,lsave,isave,dsave,maxls)"""

    monkeypatch.setattr(core, "setulb", setulb)
    assert not check()


def test_values_of_other_types_as_minimize():
    # a 0-d array for the value and a float32 gradient: converted as scipy converts them
    def loose(x):
        f, g = rosenbrock(x)
        return np.asarray(f), g.astype(np.float32)

    assert_same_run(loose, np.array([-1.2, 1.0]), {"maxiter": 200})


def test_module_example_runs():
    import doctest

    assert doctest.testmod(_lbfgsb).failed == 0
