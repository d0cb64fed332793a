"""Warnings for inputs a GP model accepts but that a user almost never means.

* :func:`warn_nonfinite_test_rows`: NaN/inf test rows give NaN predictions in those rows only; say so.
* :class:`InputScaleWatch`: at the first training-mode call, compare the spread of the inputs each
  kernel sees with its lengthscale; inputs at 10⁶ (or 10⁻⁶) against a lengthscale of ~0.7 make the
  default model fit nothing, silently.
* :func:`warn_eval_mode_objective`: a training objective called on a model in eval mode (with
  gradients on) optimises something other than the marginal likelihood or ELBO.
* :func:`warn_eval_on_train_inputs`: GPyTorch's warning when an eval-mode exact GP is called on its
  training inputs (under ``settings.debug``).
"""

from __future__ import annotations

import torch

from torchgp import _record
from torchgp._shapes import broadcast_shapes
from torchgp.kernels.kernel import Kernel
from torchgp.models.validation import nonfinite_rows
from torchgp.utils.warnings import GPInputWarning

# Spread / lengthscale outside this range: the kernel matrix is (numerically) the identity or all ones.
SCALE_RANGE = (1e-3, 1e3)


def warn_nonfinite_test_rows(inputs: tuple, stacklevel: int = 4) -> None:
    """Warn (:class:`~torchgp.utils.warnings.GPInputWarning`) if a test input ``(*batch, t, d)`` has NaN/inf rows.

    One sum per input (and one host sync): NaN/inf make it non-finite; only then are the rows scanned.
    """
    for x in inputs:
        if not torch.is_tensor(x) or not x.is_floating_point() or bool(torch.isfinite(x.sum())):
            continue
        rows = nonfinite_rows(x, -2)
        if not rows:  # the sum overflowed, every entry is finite
            continue
        _record.warn(
            f"The test inputs hold NaN or inf in {len(rows)} row(s) (first: {rows[:10]}): the predictive mean and "
            "variance at those rows are NaN (for ±inf, with a stationary kernel, the prior's); the other rows are "
            "unaffected. Drop or impute those rows before predicting, or keep the outputs at the finite rows, "
            "torch.isfinite(X).all(-1).",
            GPInputWarning,
            stacklevel=stacklevel,
        )
        return


def warn_eval_on_train_inputs(inputs: tuple, train_inputs: tuple, stacklevel: int = 4) -> None:
    """GPyTorch's check: an eval-mode exact GP called on exactly its training inputs (only same-shape inputs are compared)."""
    if len(inputs) != len(train_inputs) or not all(
        a is t or (a.shape == t.shape and torch.equal(a, t)) for a, t in zip(inputs, train_inputs)
    ):
        return
    _record.warn(
        "The input matches the stored training data: in eval mode model(X) is the posterior at X, not the prior. "
        "Did you forget to call model.train()?",
        GPInputWarning,
        stacklevel=stacklevel,
    )


def warn_eval_mode_objective(objective, stacklevel: int = 3) -> None:
    """Warn when ``objective`` (an MLL/ELBO) is evaluated with gradients on a model in eval mode."""
    model = getattr(objective, "model", None)
    if model is None or getattr(model, "training", True) or not torch.is_grad_enabled():
        return
    name = type(objective).__name__
    _record.warn(
        f"{name} was called with gradients enabled on a model in eval mode: the model's outputs are then "
        "predictions (an exact GP returns its posterior, variational caches are frozen), so optimising this "
        f"value does not optimise the {name}. Call model.train() and likelihood.train() before the training "
        "loop; to only score the model in eval mode, wrap the call in `with torch.no_grad():`.",
        GPInputWarning,
        stacklevel=stacklevel,
    )


def _top_kernels(model) -> list[Kernel]:
    """Kernels of ``model`` that are not inside another kernel (the ones the model calls)."""
    found, stack = [], [model]
    seen = set()
    while stack:
        mod = stack.pop()
        for child in mod._modules.values():
            if child is None or id(child) in seen:
                continue
            seen.add(id(child))
            if isinstance(child, Kernel):
                found.append(child)
            else:
                stack.append(child)
    return found


def _scale_problems(kernel: Kernel, x: torch.Tensor, path: str) -> list[tuple[str, str, float, float]]:
    """``(path, kernel name, spread, lengthscale)`` for each lengthscale kernel below ``kernel`` off the scale.

    ``x (*batch, n, d)`` are the inputs ``kernel`` is called on; ``active_dims`` select columns on the way
    down; children of kernels that transform their inputs are not followed.
    """
    if kernel.active_dims is not None:
        x = x.index_select(-1, kernel.active_dims.to(x.device))
    out = []
    if kernel.has_lengthscale and x.shape[-2] > 1:
        spread = (x.amax(-2) - x.amin(-2)).unsqueeze(-2)  # (*batch, 1, d): O(n·d)
        ls = kernel.lengthscale.detach()
        try:
            broadcast_shapes(spread.shape, ls.shape)
        except RuntimeError:
            ls = None  # a lengthscale that is not per input column (e.g. per task): not checked
        if ls is not None:
            ratio = spread / ls
            off = (spread > 0) & ((ratio < SCALE_RANGE[0]) | (ratio > SCALE_RANGE[1]))
            if bool(off.any()):
                worst = ratio[off].log10().abs().argmax()
                out.append(
                    (
                        path,
                        type(kernel).__name__,
                        float(spread.expand_as(ratio)[off][worst]),
                        float(ls.expand_as(ratio)[off][worst]),
                    )
                )
    if kernel._children_see_inputs:
        for name, child in kernel.named_children():
            if isinstance(child, Kernel):
                out.extend(_scale_problems(child, x, f"{path}.{name}" if path else name))
    return out


def _scale_message(problems) -> str:
    path, kname, spread, ls = problems[0]
    init = f"{spread / 4:.3g}"
    where = f"{kname} ({path})" if path else kname
    more = f" ({len(problems) - 1} more kernel(s) likewise)" if len(problems) > 1 else ""
    return (
        f"The inputs are on a scale far from the kernel's lengthscale: {where} sees inputs spanning {spread:.3g} "
        f"in a dimension against a lengthscale of {ls:.3g} (ratio outside [{SCALE_RANGE[0]:g}, "
        f"{SCALE_RANGE[1]:g}]){more}, so the kernel matrix is nearly the identity or all ones and the model will "
        "fit nothing. Standardise the inputs (X = (X - X.mean(0)) / X.std(0)), rescale them in forward with "
        "torchgp.utils.grid.ScaleToBounds, or initialise the lengthscale to the data's scale, e.g. "
        f"model.initialize(**{{'{path + '.' if path else ''}lengthscale': {init}}})."
    )


class InputScaleWatch:
    """Records the inputs of the model's kernels during one call, then checks their scale (once).

    ``watch = InputScaleWatch.start(model, key)`` returns None when ``key`` (the training inputs' identity
    and version) was checked already; otherwise use it as a context manager around the training-mode
    call: pre-hooks on the model's top-level kernels see their inputs, and on exit they are removed and a
    :class:`~torchgp.utils.warnings.GPInputWarning` is issued if a lengthscale is off the inputs' scale.
    """

    def __init__(self, model, key):
        self.model, self.key, self.seen, self.handles = model, key, {}, []

    @classmethod
    def start(cls, model, key) -> InputScaleWatch | None:
        if model.__dict__.get("_input_scale_key") == key:
            return None
        return cls(model, key)

    def _record(self, kernel, args):
        if args and torch.is_tensor(args[0]) and id(kernel) not in self.seen:
            self.seen[id(kernel)] = (kernel, args[0])

    def __enter__(self):
        names = {id(m): n for n, m in self.model.named_modules()}
        self.names = names
        for kernel in _top_kernels(self.model):
            self.handles.append(kernel.register_forward_pre_hook(lambda mod, args: self._record(mod, args)))
        return self

    def __exit__(self, exc_type, *exc):
        for h in self.handles:
            h.remove()
        if exc_type is not None:
            return False
        self.model.__dict__["_input_scale_key"] = self.key
        problems = []
        with torch.no_grad():
            for kernel, x in self.seen.values():
                x = x.unsqueeze(-1) if x.dim() == 1 else x
                if x.is_floating_point():
                    problems.extend(_scale_problems(kernel, x.detach(), self.names.get(id(kernel), "")))
        if problems:
            _record.warn(_scale_message(problems), GPInputWarning, stacklevel=5)
        return False


def input_key(inputs: tuple) -> tuple:
    """Identity and version of the training inputs: a new tensor or an in-place change triggers a new check."""
    return tuple((id(x), x._version, tuple(x.shape)) for x in inputs if torch.is_tensor(x))
