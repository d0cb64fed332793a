"""Run one GPyTorch-style program with GPyTorch 1.15 and with ``torchgp`` in its place; compare the numbers.

A program is a function ``program(gpytorch, share) -> dict[str, Tensor]`` written against GPyTorch's
public API only. It draws its data first (after the harness seeds torch), builds its model, and calls
``share(module)`` once on it: the GPyTorch run records the module's ``state_dict`` and the torchgp run
loads it with ``strict=True``, so both start from the same parameters (random variational
initialisations included) and GPyTorch's state dicts are checked to load into torchgp's modules. Whatever the program
returns (losses along training, predictive means and variances) is compared entry by entry.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

import torchgp

gpytorch = pytest.importorskip("gpytorch")


class _Share:
    def __init__(self):
        self.states: list[dict] = []
        self.replay = False
        self.i = 0

    def __call__(self, module: torch.nn.Module) -> None:
        if not self.replay:
            self.states.append({k: v.clone() for k, v in module.state_dict().items()})
            return
        module.load_state_dict(self.states[self.i], strict=True)  # a GPyTorch checkpoint loads as it is
        self.i += 1


def run_both(program: Callable, seed: int = 0) -> tuple[dict, dict]:
    """``(GPyTorch's results, torchgp's results)`` of ``program``, both from ``torch.manual_seed(seed)``."""
    share = _Share()
    torch.manual_seed(seed)
    ref = program(gpytorch, share)
    share.replay = True
    torch.manual_seed(seed)
    ours = program(torchgp, share)
    assert share.i == len(share.states), "the torchgp run shared fewer modules than the GPyTorch run"
    return ref, ours


def assert_same(ref: dict, ours: dict, rtol: float, atol: float, loose: dict | None = None) -> None:
    """Every entry of ``ref`` equals the one of ``ours`` (``loose``: per-key ``(rtol, atol)`` overrides)."""
    assert set(ref) == set(ours)
    for key, r in ref.items():
        rt, at = (loose or {}).get(key, (rtol, atol))
        o = ours[key]
        r = torch.as_tensor(r, dtype=torch.float64)
        o = torch.as_tensor(o, dtype=torch.float64)
        assert o.shape == r.shape, f"{key}: shape {tuple(o.shape)} vs GPyTorch's {tuple(r.shape)}"
        torch.testing.assert_close(o, r, rtol=rt, atol=at, msg=lambda m, key=key: f"{key}: {m}")


def step_losses(optimizers, loss_fn: Callable, steps: int) -> torch.Tensor:
    """Losses of ``steps`` steps taken by every optimiser of ``optimizers`` together, ``(steps,)``.

    E.g. NGD on the variational parameters with Adam on the hyperparameters (GPyTorch's NGD tutorial loop): each step
    zeroes every optimiser's gradients, evaluates and differentiates the loss once, then steps each in order.
    """
    out = []
    for _ in range(steps):
        for opt in optimizers:
            opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        for opt in optimizers:
            opt.step()
        out.append(loss.detach())
    return torch.stack(out)


def adam_losses(params, loss_fn: Callable, steps: int, lr: float = 0.1) -> torch.Tensor:
    """Losses of ``steps`` Adam steps on ``params`` (the tutorials' training loop), ``(steps,)``.

    ``params``: a module (its ``parameters()``) or a list of parameters (e.g. the model's and the likelihood's).
    """
    params = params.parameters() if isinstance(params, torch.nn.Module) else params
    return step_losses([torch.optim.Adam(params, lr=lr)], loss_fn, steps)


def train_exact(gp, share, model, x, y, steps: int, lr: float = 0.1) -> torch.Tensor:
    """GPyTorch's exact-GP tutorial training of ``model`` under library ``gp``, ``(steps,)`` losses.

    ``model``'s initial state is shared between the libraries first; then ``steps`` Adam steps on
    ``-ExactMarginalLogLikelihood(model.likelihood, model)(model(x), y)``, and ``model`` is left in eval mode.
    """
    share(model)
    model.train()
    mll = gp.mlls.ExactMarginalLogLikelihood(model.likelihood, model)
    losses = adam_losses(model, lambda: -mll(model(x), y), steps, lr=lr)
    model.eval()
    return losses
