r"""One start of :func:`~torchgp.optim.fit.fit` with ``torch.optim`` optimisers (Adam, LBFGS, NGD + Adam, ...).

Full-batch training steps on the exact GP's own data or a fixed ``(X, y)``; minibatch training runs
epochs over a DataLoader (then an iteration is an epoch and only patience / maxiter stop it).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from torchgp.errors import InputError, NonFiniteError
from torchgp.optim._direct import FitLoss
from torchgp.optim._run import _batches, _loss_on, _Run, _Stop


def torch_optimizers(optimizer, params, lr) -> list[torch.optim.Optimizer]:
    """The optimiser(s) ``fit(optimizer=...)`` names: an instance, a list of them, a class or a name."""
    if isinstance(optimizer, torch.optim.Optimizer):
        return [optimizer]
    if isinstance(optimizer, (list, tuple)) and all(isinstance(o, torch.optim.Optimizer) for o in optimizer):
        return list(optimizer)
    if isinstance(optimizer, type) and issubclass(optimizer, torch.optim.Optimizer):
        return [optimizer(params, lr=lr)]
    if isinstance(optimizer, str):
        names = {name.lower(): name for name in dir(torch.optim) if isinstance(getattr(torch.optim, name), type)}
        name = names.get(optimizer.lower())
        cls = getattr(torch.optim, name) if name else None
        if cls is not None and issubclass(cls, torch.optim.Optimizer):
            return [cls(params, lr=lr)]
    raise InputError(
        f"fit: unknown optimizer {optimizer!r}. Pass 'L-BFGS-B' (scipy), the name of a torch.optim optimiser "
        "('adam', 'sgd', 'lbfgs', ...), a torch.optim.Optimizer class, or an instance (or a list of instances)."
    )


def optimizer_name(optimizer) -> str:
    """A readable name of what ``fit(optimizer=...)`` was given."""
    if isinstance(optimizer, str):
        return optimizer
    if isinstance(optimizer, (list, tuple)):
        return "+".join(type(o).__name__ for o in optimizer)
    return optimizer.__name__ if isinstance(optimizer, type) else type(optimizer).__name__


def run_torch(run: _Run, mll, model, vec, data, optimizer, lr, maxiter, ftol, gtol, patience, bar) -> _Run:
    """Train with ``torch.optim`` step by step from the parameters' current values, filling ``run``."""
    optimizers = torch_optimizers(optimizer, vec.params, lr)
    uses_closure = any(isinstance(o, torch.optim.LBFGS) for o in optimizers)
    full_batch = data is None or (
        isinstance(data, (tuple, list)) and len(data) == 2 and all(torch.is_tensor(t) for t in data)
    )

    # the exact GP on its own data: evaluated from its parts once the first evaluation matched (FitLoss)
    own_loss = None
    if data is None:
        own_loss = FitLoss(
            mll, model, lambda: _loss_on(mll, model, model.train_inputs[0], model.train_targets), True, vec.params
        )

    def step(X, y) -> float:
        def closure():
            for o in optimizers:
                o.zero_grad()
            loss = _loss_on(mll, model, X, y) if own_loss is None else own_loss()
            loss.backward()
            return loss

        if uses_closure:
            losses = [float(o.step(closure)) for o in optimizers]
            run.nfev += 1
            return losses[-1]
        loss = closure()
        for o in optimizers:
            o.step()
        run.nfev += 1
        return float(loss.detach())

    try:
        for _ in range(maxiter):
            if full_batch:
                X, y = (model.train_inputs[0], model.train_targets) if data is None else data
                before = vec.get()
                loss = step(X, y)
                grad_max = float(np.max(np.abs(vec.grad()))) if vec.params else 0.0
                if math.isfinite(loss) and loss < run.best_loss:
                    run.best_loss, run.best_x = loss, before
            else:
                losses = [step(X, y) for X, y in _batches(data)]
                loss = float(np.mean(losses))
                grad_max = math.inf
                if math.isfinite(loss) and loss < run.best_loss:
                    run.best_loss, run.best_x = loss, vec.get()
            if not math.isfinite(loss):
                raise NonFiniteError(
                    f"The loss became {loss} at iteration {run.nit}; lower the learning rate (lr={lr})."
                )
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.5g}")
            previous = run.history[-1] if run.history else math.inf
            run.record_iteration(loss, ftol, patience)
            if grad_max < gtol or (
                patience is None and abs(previous - loss) < ftol * max(1.0, abs(loss)) and full_batch
            ):
                run.stop_reason = "converged"
                break
    except _Stop:
        pass
    return run
