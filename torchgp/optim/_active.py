r"""Evaluating only the still-running members of a batch of independent exact GPs.

In the lockstep of :mod:`torchgp.optim._batched` the models finish at different rounds (for 32 models of
n = 100, the last third of the rounds serves fewer than ten of them), yet a batched evaluation costs the
same for every member. :class:`SubBatch` evaluates the loss of a subset ``idx`` of the B members: for the
duration of one evaluation it installs, in place of every per-member tensor of the objective (parameters,
buffers, training data) and every ``batch_shape`` equal to ``(B,)``, its rows ``idx``, as fresh leaf
parameters whose gradients are read back; the user's parameters themselves are never written, and
everything is put back when the evaluation ends, also when it raises.

It applies only where every per-member tensor can be told apart: an exact GP whose training inputs and
targets lead with B, whose parameters and buffers lead with B (or hold one shared entry), with no other
tensor attribute leading with B and no forward hooks. The lockstep checks it once against the full
evaluation (same losses and gradients, to rounding) before relying on it, and falls back to evaluating
the whole batch otherwise.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from torchgp.models._diagnostics import input_key


def _per_member(t: torch.Tensor, B: int) -> bool | None:
    """True: one row per member (gather it); False: one shared entry (leave it); None: cannot tell."""
    if t.numel() <= 1:
        return False
    if t.dim() >= 1 and t.shape[0] == B:
        return True
    return None


class SubBatch:
    """The objective ``mll`` of B independent exact GPs, evaluated on a subset of its members.

    Use :meth:`build` (None where the structure does not allow it), then ``with sub.only(idx) as grads:``
    around one forward and backward of the loss; ``grads()`` then returns the members' flat gradients,
    ``(k, Σ per-member sizes)`` in the order of ``params``.
    """

    def __init__(self, mll, model, params: list[torch.Tensor], B: int):
        self.mll, self.model, self.params, self.B = mll, model, params, B
        self.verified = False  # set by the lockstep once a subset's evaluation matched the whole batch's
        # the last subset's training rows, (idx, whole inputs, whole targets, their rows): the same tensors while the
        # subset stays the same, so what the objective checks once per (targets, inputs) pair is not checked again
        self._rows: tuple | None = None
        self.modules = list({id(m): m for m in mll.modules()}.values())
        size = torch.Size([B])
        self.sizes = [
            (m, key) for m in self.modules for key, v in m.__dict__.items() if isinstance(v, torch.Size) and v == size
        ]

    @classmethod
    def build(cls, mll, model, params: list[torch.Tensor], B: int) -> SubBatch | None:
        """A :class:`SubBatch` for ``mll``, or None if its per-member tensors cannot all be identified."""
        inputs, targets = model.__dict__.get("train_inputs"), model.__dict__.get("train_targets")
        if not isinstance(inputs, tuple) or not torch.is_tensor(targets):
            return None
        if not all(torch.is_tensor(x) and x.dim() >= 3 and x.shape[0] == B for x in inputs):
            return None
        if targets.dim() < 2 or targets.shape[0] != B:
            return None
        for module in {id(m): m for m in mll.modules()}.values():
            for t in (*module._parameters.values(), *module._buffers.values()):
                if t is not None and _per_member(t, B) is None:
                    return None
            for key, value in module.__dict__.items():
                if torch.is_tensor(value) and not (module is model and key == "train_targets"):
                    if _per_member(value, B) is not False:
                        return None
        if any(p.dim() == 0 or p.shape[0] != B for p in params):
            return None
        return cls(mll, model, params, B)

    def hooked(self) -> bool:
        """Whether a forward hook is registered anywhere below the objective (they would see the subset)."""
        return any(m._forward_hooks or m._forward_pre_hooks for m in self.modules)

    @contextmanager
    def only(self, idx: list[int]):
        """Members ``idx`` in place of the whole batch; yields a callable returning their gradients ``(k, P)``."""
        index = torch.as_tensor(idx, dtype=torch.long)
        k = len(idx)
        model = self.model
        saved_params, saved_buffers, saved_sizes = [], [], []
        subs: dict[int, nn.Parameter] = {}
        state = model.__dict__
        saved_data = (state["train_inputs"], state["train_targets"], state.get("_input_scale_key"), state.get("_cache"))
        try:
            for module in self.modules:
                for name, p in module._parameters.items():
                    if p is not None and _per_member(p, self.B):
                        sub = subs.get(id(p))
                        if sub is None:
                            sub = subs[id(p)] = nn.Parameter(p.detach().index_select(0, index), p.requires_grad)
                        saved_params.append((module, name, p))
                        module._parameters[name] = sub
                for name, b in module._buffers.items():
                    if b is not None and _per_member(b, self.B):
                        saved_buffers.append((module, name, b))
                        module._buffers[name] = b.index_select(0, index)
            for module, key in self.sizes:
                saved_sizes.append((module, key, module.__dict__[key]))
                module.__dict__[key] = torch.Size([k])
            inputs, targets = self._training_rows(idx, index, saved_data[0], saved_data[1])
            state["train_inputs"] = inputs
            state["train_targets"] = targets
            if saved_data[2] is not None:  # the inputs' scale was checked on the whole batch: not again per subset
                state["_input_scale_key"] = input_key(inputs)

            def grads() -> np.ndarray:
                cols = []
                for p in self.params:
                    g = subs[id(p)].grad
                    cols.append(torch.zeros(k, p[0].numel(), dtype=p.dtype) if g is None else g.detach().reshape(k, -1))
                return torch.cat([c.to(dtype=torch.float64, device="cpu") for c in cols], dim=1).numpy()

            yield grads
        finally:
            for module, name, p in saved_params:
                module._parameters[name] = p
            for module, name, b in saved_buffers:
                module._buffers[name] = b
            for module, key, value in saved_sizes:
                module.__dict__[key] = value
            state["train_inputs"], state["train_targets"] = saved_data[0], saved_data[1]
            if saved_data[2] is None:
                state.pop("_input_scale_key", None)
            else:
                state["_input_scale_key"] = saved_data[2]
            state["_cache"] = saved_data[3]

    def _training_rows(self, idx: list[int], index: torch.Tensor, inputs: tuple, targets: torch.Tensor) -> tuple:
        """Rows ``idx`` of the training inputs ``(B, n, d)`` and targets ``(B, n)``: ``((k, n, d), ...), (k, n)``."""
        rows = self._rows
        if rows is None or rows[0] != idx or rows[1] is not inputs or rows[2] is not targets:
            sub_inputs = tuple(x.index_select(0, index) for x in inputs)
            rows = self._rows = (list(idx), inputs, targets, sub_inputs, targets.index_select(0, index))
        return rows[3], rows[4]
