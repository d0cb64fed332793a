"""Maximise an acquisition function over a box: raw quasi-random search, then multi-start L-BFGS-B.

1. ``raw_samples`` scrambled Sobol q-batches in the box are scored (no gradients);
2. the best ``num_restarts`` become starting points;
3. all restarts are optimised *together* by ``scipy.optimize.minimize(method="L-BFGS-B")`` on the
   sum of their (negated) values, whose gradient, from autograd, is block-separable, so one batched
   evaluation of the acquisition function serves every restart (Balandat et al. 2020, BoTorch, Sec. 4);
4. the best restart (never worse than its start) is returned.

The whole optimisation runs inside :func:`~torchgp.bo.snapshot.frozen_posterior` for the acquisition
function's model: its posterior is taken once, in closed form, and every evaluation above reuses it.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from scipy.optimize import minimize

from torchgp.bo.snapshot import frozen_posterior
from torchgp.errors import InputError, ShapeError
from torchgp.optim._scipy_runner import _scipy_blas_one_thread

_DEFAULT_OPTIONS = {
    "maxiter": 200,
    "batch_limit": 256,
    "seed": None,
    "ftol": 1e-9,
    "gtol": 1e-6,
    "frozen_posterior": True,
}


def check_bounds(bounds) -> torch.Tensor:
    """``bounds (2, d)``: finite, floating, ``lower <= upper`` in every dimension."""
    if not isinstance(bounds, torch.Tensor):
        bounds = torch.as_tensor(bounds)
    if bounds.dim() != 2 or bounds.shape[0] != 2 or bounds.shape[1] == 0:
        raise ShapeError(
            f"bounds must have shape (2, d): row 0 the lower and row 1 the upper bounds; got {tuple(bounds.shape)}. "
            "For d = 1 pass torch.tensor([[lo], [hi]])."
        )
    if not bounds.is_floating_point():
        bounds = bounds.to(torch.get_default_dtype())
    if not torch.all(torch.isfinite(bounds)):
        raise InputError(f"bounds must be finite; got {bounds.tolist()}.")
    bad = torch.nonzero(bounds[0] > bounds[1]).flatten().tolist()
    if bad:
        raise InputError(
            f"bounds have lower > upper in dimension(s) {bad}: lower {bounds[0, bad].tolist()}, upper "
            f"{bounds[1, bad].tolist()}. Row 0 of bounds holds the lower bounds, row 1 the upper bounds."
        )
    return bounds


def _evaluate(acq_function, X: torch.Tensor, batch_limit: int) -> torch.Tensor:
    """Acquisition values of ``X (b, q, d)`` in chunks of ``batch_limit``, without gradients → ``(b,)``."""
    with torch.no_grad():
        return torch.cat([acq_function(X[i : i + batch_limit]) for i in range(0, X.shape[0], batch_limit)])


def optimize_acqf(acq_function, bounds, q: int = 1, num_restarts: int = 8, raw_samples: int = 256, options=None):
    """Maximise ``acq_function`` over q-batches in the box ``bounds``.

    Args:
        acq_function: an acquisition function ``X (*batch, q, d)`` → ``(*batch)`` (e.g. from
            :mod:`torchgp.bo.acquisition` or :mod:`torchgp.bo.monte_carlo`), differentiable in ``X``.
        bounds: ``(2, d)``: lower bounds in row 0, upper bounds in row 1.
        q: number of points chosen jointly (``q > 1`` needs a q-batch acquisition function).
        num_restarts: starting points for L-BFGS-B (the best of the raw samples).
        raw_samples: scrambled Sobol q-batches scored to choose the starts (at least ``num_restarts``).
        options: dict with ``maxiter`` (L-BFGS-B iterations, default 200), ``batch_limit`` (raw samples
            scored per call, 256), ``seed`` (Sobol scrambling; default drawn from torch's generator, so
            ``torch.manual_seed`` makes runs repeatable), ``ftol`` and ``gtol`` (scipy tolerances),
            ``frozen_posterior`` (default True: evaluate through one closed-form snapshot of the model's
            posterior, :class:`~torchgp.bo.snapshot.PosteriorSnapshot`, where it covers the model; False:
            call the model every time).

    Returns:
        ``(candidates, value)``: the best q-batch ``(q, d)`` (inside the bounds, in the bounds' dtype)
        and its acquisition value (a 0-d tensor).

    Raises:
        ShapeError: bounds not ``(2, d)``; q > 1 for an analytic acquisition function.
        InputError: lower > upper, non-finite bounds, bad counts or unknown options.

    Example:
        >>> cand, val = optimize_acqf(LogExpectedImprovement(model, best_f=y.max()), bounds)  # doctest: +SKIP
    """
    bounds = check_bounds(bounds)
    opts = dict(_DEFAULT_OPTIONS)
    unknown = set(options or {}) - set(opts)
    if unknown:
        raise InputError(f"optimize_acqf: unknown option(s) {sorted(unknown)}; valid ones are {sorted(opts)}.")
    opts.update(options or {})
    if q < 1 or num_restarts < 1 or raw_samples < num_restarts:
        raise InputError(
            f"optimize_acqf needs q >= 1, num_restarts >= 1 and raw_samples >= num_restarts; got q={q}, "
            f"num_restarts={num_restarts}, raw_samples={raw_samples}."
        )
    seed = opts["seed"] if opts["seed"] is not None else int(torch.randint(0, 2**31 - 1, ()).item())
    model = getattr(acq_function, "model", None)
    frozen = frozen_posterior(model) if opts["frozen_posterior"] and model is not None else contextlib.nullcontext()
    with frozen:
        return _optimize(acq_function, bounds, q, num_restarts, raw_samples, opts, seed)


def _optimize(acq_function, bounds, q, num_restarts, raw_samples, opts, seed):
    """The body of :func:`optimize_acqf` (arguments checked there): steps 1–4 of the module docs."""
    d = bounds.shape[1]
    lower, upper = bounds[0], bounds[1]

    # 1-2. Raw Sobol q-batches in the box; the best num_restarts of them start L-BFGS-B.
    sobol = torch.quasirandom.SobolEngine(dimension=q * d, scramble=True, seed=seed)
    U = sobol.draw(raw_samples, dtype=torch.float64).to(bounds).reshape(raw_samples, q, d)
    X_raw = lower + (upper - lower) * U
    raw_values = _evaluate(acq_function, X_raw, int(opts["batch_limit"]))
    top = torch.topk(torch.nan_to_num(raw_values, nan=-torch.inf), num_restarts).indices
    X0, values0 = X_raw[top], raw_values[top]

    # 3. All restarts in one L-BFGS-B problem: minimise -Σ_r acq(X_r), gradient by autograd.
    shape = X0.shape

    def objective(x: np.ndarray) -> tuple[float, np.ndarray]:
        X = torch.from_numpy(x).to(bounds).reshape(shape).requires_grad_(True)
        loss = -acq_function(X).sum()
        (grad,) = torch.autograd.grad(loss, X)
        if not torch.isfinite(loss):
            return float("inf"), np.zeros_like(x)
        return loss.item(), torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0).reshape(-1).double().numpy()

    box = np.stack(
        [lower.expand(shape).reshape(-1).double().numpy(), upper.expand(shape).reshape(-1).double().numpy()], 1
    )
    with _scipy_blas_one_thread():  # L-BFGS-B's vector BLAS on few entries: waking a thread pool costs more
        result = minimize(
            objective,
            X0.detach().reshape(-1).double().numpy(),
            jac=True,
            method="L-BFGS-B",
            bounds=box,
            options={"maxiter": int(opts["maxiter"]), "ftol": opts["ftol"], "gtol": opts["gtol"]},
        )

    # 4. Per restart keep the better of start and end (the joint line search may trade one restart for another).
    X_opt = torch.from_numpy(result.x).to(bounds).reshape(shape)
    X_opt = torch.maximum(torch.minimum(X_opt, upper), lower)
    values = _evaluate(acq_function, X_opt, int(opts["batch_limit"]))
    improved = torch.nan_to_num(values, nan=-torch.inf) >= values0
    X_best = torch.where(improved.reshape(-1, 1, 1), X_opt, X0)
    values = torch.where(improved, values, values0)
    best = int(torch.argmax(torch.nan_to_num(values, nan=-torch.inf)))
    return X_best[best].detach(), values[best].detach()
