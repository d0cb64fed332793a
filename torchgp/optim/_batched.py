r"""Fitting a batch of independent models in lockstep: one L-BFGS-B per model, one batched evaluation per round.

A model with ``batch_shape=(B,)`` holds B independent GPs: its loss is a ``(B,)`` vector and model
``i``'s loss depends only on slice ``i`` of every parameter. Minimising the sum with one L-BFGS-B
couples them through its shared line search and curvature pairs (many more iterations, each model
stopped by the others' criteria). Here each model gets its own scipy L-BFGS-B, a suspended
:class:`~torchgp.optim._lbfgsb.LBFGSB` state waiting for the value and gradient at the point it asks
for; the calling thread holds all B, evaluates their losses and gradients in ONE batched forward and
backward per round, and tells each its own. Each model thus follows exactly the iterates of fitting
it alone (up to the rounding of batched kernels), and the batch costs about as many batched
evaluations as the slowest model needs.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from torchgp.errors import InputError, NonFiniteError, NotPSDError
from torchgp.optim import _lbfgsb
from torchgp.optim._batched_threads import run_threads
from torchgp.optim._scipy_runner import lbfgsb_options


def independent_blocks(params: list[torch.Tensor], sizes: list[int], losses: torch.Tensor) -> list[np.ndarray] | None:
    """Positions of each model's entries in the flat parameter vector, or None if the models are not separable.

    Separable: ``losses`` has shape ``(B,)`` with ``B > 1`` and every parameter has shape ``(B, ...)``.
    """
    if losses.dim() != 1 or losses.shape[0] < 2:
        return None
    B = losses.shape[0]
    if any(p.dim() == 0 or p.shape[0] != B for p in params):
        return None
    blocks: list[list[np.ndarray]] = [[] for _ in range(B)]
    offset = 0
    for _p, size in zip(params, sizes):
        per = size // B
        for i in range(B):  # row-major: model i owns the contiguous run [i·per, (i+1)·per) of this parameter
            blocks[i].append(np.arange(offset + i * per, offset + (i + 1) * per))
        offset += size
    return [np.concatenate(b) for b in blocks]


def member_objective(mll, model) -> torch.Tensor:
    """``mll(model(X), y)`` of a batch of exact GPs, ``(B,)``, with each member's own log-prior only.

    ``ExactMarginalLogLikelihood`` adds ``Σ log p(θ)`` summed over the whole batch to every member's value
    (GPyTorch's convention), which couples the members: member i's value would move with member j's
    parameters and its prior's gradient would count B times. Here the value is the log marginal likelihood
    plus member i's own share ``p_i`` (the log-densities of its slices), divided by n as GPyTorch does. Falls
    back to ``mll``'s own value when a prior's log-density does not lead with the batch dimension (a prior on
    a shared parameter), for multitask models and for other objectives.
    """
    from torchgp.mlls import ExactMarginalLogLikelihood
    from torchgp.mlls.exact_marginal_log_likelihood import _EXCLUDE_PRIORS

    output = model(*model.train_inputs)
    targets = model.train_targets
    B = targets.shape[0] if targets.dim() == 2 else None
    if type(mll) is not ExactMarginalLogLikelihood or getattr(model, "_multi_output", False) or B is None:
        return mll(output, targets)
    shares = []
    for _, module, prior, closure, _ in mll.named_priors():
        log_p = prior.log_prob(closure(module))
        if log_p.dim() == 0 or log_p.shape[0] != B:
            return mll(output, targets)
        shares.append(log_p.reshape(B, -1).sum(-1))
    if not shares:
        return mll(output, targets)
    token = _EXCLUDE_PRIORS.set(True)
    try:
        values = mll(output, targets)
    finally:
        _EXCLUDE_PRIORS.reset(token)
    return values + torch.stack(shares).sum(0) / targets.shape[-1]


class _Model:
    """One model's optimiser state in the lockstep."""

    def __init__(self, x0: np.ndarray):
        self.x = x0.copy()
        self.best_loss = math.inf
        self.best_x = x0.copy()
        self.history: list[float] = []
        self.best_history = math.inf  # min(history), kept as it grows
        self.nit = 0
        self.since_improvement = 0
        self.status = None
        self.message = ""
        self.error: BaseException | None = None

    def iteration(self, ftol: float, patience: int | None) -> bool:
        """Record an iteration of this model's L-BFGS-B (its best loss so far); True when patience is exhausted."""
        previous_best = self.best_history
        self.history.append(self.best_loss)
        self.best_history = min(previous_best, self.best_loss)
        self.nit += 1
        scale = max(1.0, abs(previous_best) if math.isfinite(previous_best) else 1.0)
        self.since_improvement = 0 if self.best_loss < previous_best - ftol * scale else self.since_improvement + 1
        if patience is not None and self.since_improvement >= patience:
            self.status = "patience"
            return True
        return False


class _Rounds:
    """One round of the lockstep: the asking models' points in, one batched evaluation, their answers out."""

    def __init__(self, run, vec, x_full, blocks, models, loss_vector, bar, subset):
        self.run, self.vec, self.x_full, self.blocks, self.models = run, vec, x_full, blocks, models
        self.loss_vector, self.bar, self.subset = loss_vector, bar, subset

    def __call__(self, asked: dict[int, np.ndarray]) -> dict[int, tuple[float, np.ndarray]]:
        """``{i: x_i (p_i,)}`` → ``{i: (loss_i, gradient_i (p_i,))}`` for the models that asked."""
        x_full, blocks, models = self.x_full, self.blocks, self.models
        for i, x in asked.items():
            x_full[blocks[i]] = x
        answers = None
        subset = self.subset
        if subset is not None and len(asked) < len(blocks) and not subset.hooked():
            answers, self.subset = _evaluate_subset(self.run, self.vec, x_full, blocks, asked, models,
                                                    self.loss_vector, subset)  # fmt: skip
        if answers is None:
            answers = _evaluate(self.run, self.vec, x_full, blocks, asked, models, self.loss_vector)
        self.run.nfev += 1
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{sum(m.best_loss for m in models):.5g}")
        return answers


def run_lockstep(run, vec, blocks, loss_vector, maxiter, ftol, gtol, patience, bar, subset=None):
    """Fit the separable models behind ``vec`` with one L-BFGS-B each, evaluated together.

    Each model's optimiser is a suspended :class:`~torchgp.optim._lbfgsb.LBFGSB` state, all held by the calling
    thread: a round evaluates every pending request in one batched pass and tells each state its answer. Where
    scipy's core cannot be driven directly, each model's ``minimize`` runs in a worker thread instead
    (:func:`~torchgp.optim._batched_threads.run_threads`); both follow the same iterates.

    Args:
        run: the ``fit`` run record to fill (best loss = sum of the models' best, best_x, counters).
        vec: the flat parameter vector of all models (``get``/``set``/``grad``/``params``).
        blocks: ``independent_blocks(...)``: model i's positions in the flat vector.
        loss_vector: callable returning the ``(B,)`` losses at the current parameters (differentiable).
        maxiter, ftol, gtol, patience, bar: as in :func:`torchgp.fit`, per model.
        subset: a :class:`~torchgp.optim._active.SubBatch` of the objective, or None. With one, a round in
            which only some models are still running evaluates those alone (``loss_vector`` then returns
            their ``(k,)`` losses); the first such round is checked against the whole batch's evaluation.
    """
    B = len(blocks)
    x_full = vec.get()
    models = [_Model(x_full[b]) for b in blocks]
    rounds = _Rounds(run, vec, x_full, blocks, models, loss_vector, bar, subset)
    try:
        if _lbfgsb.available():
            _run_states(models, rounds, maxiter, ftol, gtol, patience)
        else:
            run_threads(models, rounds, lambda i: models[i].iteration(ftol, patience), maxiter, ftol, gtol)
    except BaseException:
        if all(math.isfinite(m.best_loss) for m in models):  # interrupted: keep every model's best so far
            _collect(run, models, blocks, x_full)
        raise
    _collect(run, models, blocks, x_full)
    run.nit = max(m.nit for m in models)
    longest = max(len(m.history) for m in models)
    run.history = [
        sum(m.history[min(k, len(m.history) - 1)] if m.history else m.best_loss for m in models) for k in range(longest)
    ]
    statuses = [m.status or "maxiter" for m in models]
    order = ["failed", "stalled", "maxiter", "patience", "converged"]
    run.stop_reason = min(statuses, key=order.index)
    run.message = f"{statuses.count('converged')} of {B} models converged"
    return run


def _run_states(models, rounds, maxiter, ftol, gtol, patience) -> None:
    """The lockstep on :class:`~torchgp.optim._lbfgsb.LBFGSB` states, in this thread."""
    options = lbfgsb_options(maxiter, ftol, gtol)
    states = [_lbfgsb.LBFGSB(m.x, callback=lambda _x, m=m: m.iteration(ftol, patience), **options) for m in models]
    while True:
        asked = {i: s.x for i, s in enumerate(states) if not s.done}
        if not asked:
            break
        for i, (value, grad) in rounds(asked).items():
            states[i].tell(value, grad)
    for m, s in zip(models, states):
        if m.status is None:  # not stopped by patience
            m.message = s.message
            m.status = {0: "converged", 1: "maxiter"}.get(s.status, "stalled")


def _collect(run, models, blocks, x_full) -> None:
    """Every model's best parameters into one flat vector, and their summed loss, on ``run``."""
    for i, m in enumerate(models):
        x_full[blocks[i]] = m.best_x
    run.best_x = x_full.copy()
    run.best_loss = float(sum(m.best_loss for m in models))


def _evaluate(run, vec, x_full, blocks, asked, models, loss_vector):
    """All B losses and gradients at ``x_full`` in one batched pass; answers for the models that asked."""
    vec.set(x_full)
    for p in vec.params:
        p.grad = None
    try:
        losses = loss_vector()
        if tuple(losses.shape) != (len(blocks),):
            raise InputError(
                f"fit: the batched models' loss has shape {tuple(losses.shape)}, not ({len(blocks)},) as their "
                "targets and parameters suggest; pass batch_independent=False to fit them jointly."
            )
        losses.sum().backward()
    except (NotPSDError, NonFiniteError) as err:
        if not all(math.isfinite(models[i].best_loss) for i in asked):
            raise  # a start itself is bad: the caller retries with more jitter
        run.failed_points.append(f"{type(err).__name__}: {err}")
        return {i: (abs(models[i].best_loss) * 10 + 1e3, np.zeros_like(x)) for i, x in asked.items()}
    values = losses.detach().to(torch.float64).cpu().numpy()
    grad_full = vec.grad()
    finite = bool(np.isfinite(values).all() and np.isfinite(grad_full).all())
    return _answer(asked, models, {i: (float(values[i]), grad_full[blocks[i]]) for i in asked}, finite)


def _evaluate_subset(run, vec, x_full, blocks, asked, models, loss_vector, subset):
    """``(answers, subset)`` from evaluating only the models that asked; answers None: evaluate the whole batch.

    The first call also evaluates the whole batch and compares: the subset's losses and gradients must equal
    it to rounding, else (or if the subset cannot be evaluated) the subset is dropped (returned as None).
    """
    idx = sorted(asked)
    vec.set(x_full)
    try:
        with subset.only(idx) as member_grads:
            losses = loss_vector()
            if tuple(losses.shape) != (len(idx),):
                return None, None
            losses.sum().backward()
            values = losses.detach().to(torch.float64).cpu().numpy()
            grads = member_grads()
    except (NotPSDError, NonFiniteError):
        return None, subset  # the whole batch's evaluation handles the failed point
    except Exception:  # the objective does not take a subset: evaluate the whole batch from now on
        return None, None
    results = {i: (float(values[j]), grads[j]) for j, i in enumerate(idx)}
    if not subset.verified:
        answers = _evaluate(run, vec, x_full, blocks, asked, models, loss_vector)
        for i, (value, grad) in results.items():
            ref_value, ref_grad = answers[i]
            scale = max(1.0, float(np.abs(ref_grad).max(initial=0.0)))
            if not (
                abs(value - ref_value) <= 1e-9 * max(1.0, abs(ref_value))
                and np.allclose(grad, ref_grad, 0, 1e-7 * scale)
            ):
                return answers, None
        subset.verified = True
        return answers, subset
    finite = bool(np.isfinite(values).all() and np.isfinite(grads).all())
    return _answer(asked, models, results, finite), subset


def _answer(asked, models, results, finite=False):
    """Each asking model's ``(loss, gradient)``, its best point updated; a non-finite result reads as a high loss.

    ``finite``: every value and gradient is known to be finite (checked once for the whole round).
    """
    answers = {}
    for i, x in asked.items():
        value, grad = results[i]
        m = models[i]
        if not finite and not (math.isfinite(value) and np.all(np.isfinite(grad))):
            answers[i] = (abs(m.best_loss) * 10 + 1e3 if math.isfinite(m.best_loss) else 1e10, np.zeros_like(x))
            continue
        if value < m.best_loss:
            m.best_loss, m.best_x = value, x.copy()
        answers[i] = (value, grad)
    return answers
