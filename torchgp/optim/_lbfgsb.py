r"""scipy's L-BFGS-B as a resumable state: ask for the point to evaluate, tell it the value and gradient.

:func:`scipy.optimize.minimize` (``method="L-BFGS-B"``) owns its loop and calls the objective; a fit of B
independent models in lockstep needs the opposite: each model's optimiser suspended at its request until
one batched evaluation answers all of them. :class:`LBFGSB` drives the same compiled core
(``scipy.optimize._lbfgsb.setulb``, reverse communication through its ``task`` codes) with the same
workspace, the same options (``factr = ftol / eps``, ``pgtol = gtol``, ``maxls``), the same handling of
``maxiter`` and ``maxfun`` after each iteration and the same cache of the last evaluated point, so the
points it asks for are bitwise those ``minimize`` evaluates, and its status and message read the same.

The core is private to scipy (its arguments as of scipy 1.15). :func:`available` checks it once per process
(version, argument list, and a short run compared point by point with ``minimize``); where it is absent or
different, callers keep ``minimize``.

Example:
    >>> import numpy as np
    >>> state = LBFGSB(np.array([3.0, -1.0]), maxiter=100, ftol=1e-12, gtol=1e-8)
    >>> while not state.done:
    ...     x = state.x
    ...     state.tell(float(x @ x), 2 * x)
    >>> state.status, bool(np.abs(state.x).max() < 1e-6)
    (0, True)
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np

from torchgp.errors import InputError, ShapeError

# scipy's task codes (``task[0]``) of the compiled core, as ``_lbfgsb_py`` names them
_NEW_X, _FG, _CONVERGENCE, _STOP = 1, 3, 4, 5
_HALT_CALLBACK, _HALT_MAXFUN, _HALT_MAXITER = 505, 502, 504
_SETULB_ARGS = "setulb(m,x,l,u,nbd,f,g,factr,pgtol,wa,iwa,task,lsave,isave,dsave,maxls,ln_task)"


class LBFGSB:
    """One unconstrained L-BFGS-B minimisation, advanced one evaluation at a time.

    Args:
        x0: the starting point, ``(p,)`` float64 (copied).
        maxiter, ftol, gtol, maxfun, maxcor, maxls: scipy's ``L-BFGS-B`` options of the same names.
        callback: called as ``callback(x)`` after each iteration with a copy of the new iterate ``(p,)``
            (scipy's ``callback(xk)``); a true return value ends the run ("CALLBACK REQUESTED HALT"), and so
            does ``StopIteration`` (status 99, as ``minimize`` reports it).
            An exception it raises propagates out of :meth:`tell`.

    Attributes:
        x: the point whose value and gradient :meth:`tell` expects, ``(p,)`` (a fresh array per request;
            after the run, the core's final point).
        done: whether the run has ended (no more requests).
        nit, nfev: iterations completed and evaluations told (scipy's ``nit``, ``nfev``).
        status: after the run, scipy's ``status``: 0 converged, 1 ``maxiter``/``maxfun`` reached, 99 the callback
            raised ``StopIteration``, 2 otherwise.
        message: after the run, scipy's ``message`` (e.g. ``"CONVERGENCE: RELATIVE REDUCTION OF F <= FACTR*EPSMCH"``).
    """

    def __init__(
        self,
        x0: np.ndarray,
        *,
        maxiter: int = 15000,
        ftol: float = 2.2204460492503131e-09,
        gtol: float = 1e-5,
        maxfun: int = 15000,
        maxcor: int = 10,
        maxls: int = 20,
        callback: Callable[[np.ndarray], object] | None = None,
    ):
        from scipy.optimize import _lbfgsb

        if not maxls > 0:
            raise InputError(f"L-BFGS-B: maxls must be positive; got {maxls}. scipy's default is 20.")
        self._setulb = _lbfgsb.setulb
        x = np.array(x0, dtype=np.float64).ravel()
        n = x.shape[0]
        m = int(maxcor)
        self._m, self._n = m, n
        self._factr = ftol / np.finfo(float).eps  # scipy: factr = ftol / machine epsilon
        self._pgtol = gtol
        self._maxiter, self._maxfun, self._maxls = maxiter, maxfun, maxls
        self._callback = callback
        self._stop_iteration = False
        self._low = np.zeros(n, np.float64)
        self._up = np.zeros(n, np.float64)
        self._nbd = np.zeros(n, np.int32)  # 0: unbounded in every coordinate
        self._x = x
        self._f = np.array(0.0, dtype=np.float64)
        self._g = np.zeros((n,), dtype=np.float64)
        self._wa = np.zeros(2 * m * n + 5 * n + 11 * m * m + 8 * m, np.float64)
        self._iwa = np.zeros(3 * n, dtype=np.int32)
        self._task = np.zeros(2, dtype=np.int32)
        self._ln_task = np.zeros(2, dtype=np.int32)
        self._lsave = np.zeros(4, dtype=np.int32)
        self._isave = np.zeros(44, dtype=np.int32)
        self._dsave = np.zeros(29, dtype=np.float64)
        # the last evaluated point and its (f, g): scipy's ScalarFunction answers a repeated point from it
        self._x_eval: np.ndarray | None = None
        self._fg: tuple[object, np.ndarray] | None = None
        self.x = x.copy()  # scipy evaluates the start once before the core's first call
        self.done = False
        self.nit = 0
        self.nfev = 0
        self.status: int | None = None
        self.message = ""

    def tell(self, f: float, g: np.ndarray) -> None:
        """Hand over the value ``f`` and gradient ``g (p,)`` at :attr:`x`; the state moves to its next request.

        Raises:
            InputError: the run has already ended.
            ShapeError: ``g`` is not of the shape of :attr:`x`.
        """
        if self.done:
            raise InputError("L-BFGS-B: the run has ended; tell() expects no more values (check .done first).")
        if not np.isscalar(f):  # as scipy's wrapper: the objective's value as a true scalar
            f = np.asarray(f).item()
        g = np.atleast_1d(g)
        if g.shape != (self._n,):
            raise ShapeError(f"L-BFGS-B: the gradient must have the shape of x, ({self._n},); got {g.shape}.")
        self.nfev += 1
        self._x_eval = self._x.copy()  # the requested point, as the core holds it (the caller may write self.x)
        self._fg = (f, g)
        if self.nfev > 1:  # at the start, the core first initialises (task START), then asks for x0 from the cache
            self._f, self._g = f, self._fg[1].astype(np.float64)
        self._advance()

    def _advance(self) -> None:
        """Run the core until it asks for a point not yet evaluated, or ends (``_minimize_lbfgsb``'s loop)."""
        task = self._task
        while True:
            # the core is handed a float64 copy of the gradient, never the cached array (scipy copies it per call;
            # the values are the same, so one copy per answer suffices)
            self._setulb(
                self._m, self._x, self._low, self._up, self._nbd, self._f, self._g, self._factr, self._pgtol,
                self._wa, self._iwa, task, self._lsave, self._isave, self._dsave, self._maxls, self._ln_task,
            )  # fmt: skip
            if task[0] == _FG:
                if (self._x == self._x_eval).all():  # scipy's np.array_equal on equal shapes: the cached point
                    self._f, self._g = self._fg[0], self._fg[1].astype(np.float64)
                    continue
                self.x = self._x.copy()
                return
            if task[0] == _NEW_X:
                self.nit += 1
                if self._callback is not None and self._halts(self._x.copy()):
                    task[0], task[1] = _STOP, _HALT_CALLBACK
                if self.nit >= self._maxiter:
                    task[0], task[1] = _STOP, _HALT_MAXITER
                elif self.nfev > self._maxfun:
                    task[0], task[1] = _STOP, _HALT_MAXFUN
                continue
            break
        self._finish()

    def _halts(self, x: np.ndarray) -> bool:
        """Whether the callback asks to end the run at ``x``: a true return value, or ``StopIteration``."""
        try:
            return bool(self._callback(x))
        except StopIteration:  # minimize's own convention, reported as minimize reports it
            self._stop_iteration = True
            return True

    def _finish(self) -> None:
        from scipy.optimize._lbfgsb_py import status_messages, task_messages

        task = self._task
        if task[0] == _CONVERGENCE:
            self.status = 0
        elif self.nfev > self._maxfun or self.nit >= self._maxiter:
            self.status = 1
        else:
            self.status = 2
        self.message = status_messages[task[0]] + ": " + task_messages[task[1]]
        if self._stop_iteration:
            self.status, self.message = 99, "`callback` raised `StopIteration`."
        self.x = self._x.copy()
        self.done = True


def _trace_minimize(fun, x0: np.ndarray, options: dict) -> list[np.ndarray]:
    """The points ``scipy.optimize.minimize(L-BFGS-B)`` evaluates ``fun`` at (``fun`` returns ``(f, g)``)."""
    from scipy.optimize import minimize

    seen: list[np.ndarray] = []

    def traced(x):
        seen.append(np.array(x))
        return fun(x)

    minimize(traced, x0, jac=True, method="L-BFGS-B", options=options)
    return seen


def _trace_state(fun, x0: np.ndarray, options: dict) -> list[np.ndarray]:
    """The points :class:`LBFGSB` asks ``fun`` for with the same options."""
    state = LBFGSB(x0, **options)
    seen: list[np.ndarray] = []
    while not state.done:
        seen.append(state.x.copy())
        state.tell(*fun(state.x))
    return seen


def _rosenbrock(x: np.ndarray) -> tuple[float, np.ndarray]:
    r"""Rosenbrock's function :math:`\sum_i 100 (x_{i+1} - x_i^2)^2 + (1 - x_i)^2` and its gradient."""
    a, b = x[:-1], x[1:]
    f = float(np.sum(100.0 * (b - a * a) ** 2 + (1.0 - a) ** 2))
    g = np.zeros_like(x)
    g[:-1] = -400.0 * a * (b - a * a) - 2.0 * (1.0 - a)
    g[1:] += 200.0 * (b - a * a)
    return f, g


@functools.cache
def available() -> bool:
    """Whether scipy's L-BFGS-B core can be driven here (checked once per process).

    It needs scipy >= 1.15 (the core's reverse-communication arguments as :class:`LBFGSB` passes them) and a
    short Rosenbrock run whose evaluated points equal ``minimize``'s bitwise.
    """
    try:
        import scipy
        from scipy.optimize import _lbfgsb
        from scipy.optimize._lbfgsb_py import status_messages, task_messages  # noqa: F401

        major, minor = (int(part) for part in scipy.__version__.split(".")[:2])
        if (major, minor) < (1, 15) or (_lbfgsb.setulb.__doc__ or "").strip().splitlines()[0] != _SETULB_ARGS:
            return False
        x0 = np.array([-1.2, 1.0, 0.5])
        options = {"maxiter": 30, "ftol": 1e-12, "gtol": 1e-9, "maxfun": 100}
        ours, theirs = _trace_state(_rosenbrock, x0, options), _trace_minimize(_rosenbrock, x0, options)
        return len(ours) == len(theirs) and all(np.array_equal(a, b) for a, b in zip(ours, theirs))
    except Exception:  # any difference in the private API: not usable
        return False
