r"""One start of :func:`~torchgp.optim.fit.fit` with scipy's L-BFGS-B on the flat raw-parameter vector.

The objective sets the parameters from L-BFGS-B's float64 vector, evaluates ``-mll`` (for an exact GP
on its own data through :class:`~torchgp.optim._direct.FitLoss`) and its gradient by autograd, and
hands both back (to a :class:`~torchgp.optim._lbfgsb.LBFGSB` state, or to ``minimize`` where scipy's
core cannot be driven directly: the same iterates); a trial point where the factorisation
fails (after the start itself succeeded) returns a high loss so that the line search backtracks.
"""

from __future__ import annotations

import math

import numpy as np

from torchgp.errors import NonFiniteError, NotPSDError
from torchgp.linalg._lapack import openblas_threads
from torchgp.optim import _lbfgsb
from torchgp.optim._direct import FitLoss
from torchgp.optim._run import _full_loss, _Run, _Stop


def _scipy_blas_one_thread():
    """A context in which scipy's and numpy's bundled OpenBLAS use one thread (torch's BLAS is untouched).

    L-BFGS-B's BLAS calls work on vectors as long as the parameter vector (tens of entries), where a
    threaded OpenBLAS only pays for waking its pool: on a 2-core machine under load, 125 calls of scipy's
    ``setulb`` for 9 parameters took 1.35 s with 2 threads and 0.01 s with one (a 100x gap that dominated
    a whole small-n fit). Results are identical. Without threadpoolctl installed this does nothing.
    """
    return openblas_threads(1)


def lbfgsb_options(maxiter: int, ftol: float, gtol: float) -> dict:
    """scipy's L-BFGS-B options for ``fit``'s stopping rules (also used per model by the lockstep runner)."""
    return {"maxiter": maxiter, "ftol": ftol, "gtol": gtol, "maxfun": max(15000, 3 * maxiter)}


def run_scipy(run: _Run, mll, model, vec, data, maxiter, ftol, gtol, patience, bar) -> _Run:
    """Minimise ``-mll`` from the parameters' current values with L-BFGS-B, filling ``run``."""
    from scipy.optimize import minimize

    params = vec.params
    full = lambda: _full_loss(mll, model, data)  # noqa: E731
    loss_of = full if data is not None else FitLoss(mll, model, full, True, params)  # the exact GP's own data

    def objective(x):
        vec.set(x)
        for p in params:
            p.grad = None
        try:
            loss = loss_of()
            loss.backward()
        except (NotPSDError, NonFiniteError) as err:
            if not math.isfinite(run.best_loss):
                raise  # the start itself is bad: handled by the caller (more jitter / another start)
            run.nfev += 1
            run.failed_points.append(f"{type(err).__name__}: {err}")
            # A failed trial point: report a high loss so the line search backtracks.
            return abs(run.best_loss) * 10 + 1e3, np.zeros_like(x)
        value = float(loss.detach())
        grad = vec.grad()
        run.record_eval(value, x)
        if not (math.isfinite(value) and np.isfinite(grad).all()):
            return abs(run.best_loss) * 10 + 1e3, np.zeros_like(x)
        return value, grad

    def callback(xk, *args):
        loss = run.best_loss
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.5g}")
        run.record_iteration(loss, ftol, patience)

    try:
        with _scipy_blas_one_thread():
            if _lbfgsb.available():  # scipy's core driven here: the same iterates without minimize's wrappers
                state = _lbfgsb.LBFGSB(vec.get(), callback=callback, **lbfgsb_options(maxiter, ftol, gtol))
                while not state.done:
                    state.tell(*objective(state.x))
                status, message = state.status, state.message
            else:
                res = minimize(
                    objective, vec.get(), jac=True, method="L-BFGS-B", callback=callback,
                    options=lbfgsb_options(maxiter, ftol, gtol),
                )  # fmt: skip
                status, message = res.status, str(res.message)
        run.message = message
        # scipy status: 0 converged (ftol/gtol), 1 iteration or evaluation limit, 2 line search stalled
        run.stop_reason = {0: "converged", 1: "maxiter"}.get(status, "stalled")
    except _Stop:
        pass
    return run
