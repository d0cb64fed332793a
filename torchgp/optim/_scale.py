r"""Fitting lengthscales in standardised units: ``fit(..., standardize_inputs=True)``.

A stationary kernel sees its inputs only through :math:`x / \ell`, so fitting with inputs divided by
their standard deviation :math:`s` from the default start :math:`\ell_0` is the same as fitting the raw
inputs with the lengthscale written :math:`\ell = s \cdot g(r)` (``g`` the constraint's transform,
``r`` the raw parameter, starting at its default): the optimiser sees the same function of ``r`` as on
standardised inputs. :func:`standardize_lengthscales` records the inputs each kernel of an exact GP
receives (one training-mode call with forward pre-hooks, as the model's own scale check does), and for
every lengthscale still at its default whose inputs' spread is off its scale swaps in that rescaled
constraint; :func:`lengthscales_in_units` does so for every lengthscale of a kernel given the inputs (the
scikit-learn estimators, which start the lengthscales from the data). :meth:`Rescaling.undo` folds
:math:`s` back into the raw parameter (reported values are in the inputs' own units) and restores the
original constraint.

Only kernels whose lengthscale divides the inputs are rescaled (not ``PeriodicKernel``, whose lengthscale
acts on :math:`\sin(\pi |x - x'| / p)`; the period is never touched). A lengthscale the user set (raw value
not the default) is left alone.
"""

from __future__ import annotations

import math

import torch

from torchgp.constraints import Interval
from torchgp.kernels.kernel import Kernel
from torchgp.models._diagnostics import _top_kernels, input_key

# spread / lengthscale outside this range: the lengthscale is started in standardised units
RESCALE_RANGE = (1e-2, 1e2)
# lengthscales that do not divide the inputs (value of ``Kernel.__name__``)
_NOT_INPUT_UNITS = frozenset({"PeriodicKernel"})


class _Scaled(Interval):
    """``value = scale · base.transform(raw)`` on ``(0, ∞)``; ``scale`` broadcasts against the raw parameter."""

    def __init__(self, base: Interval, scale: torch.Tensor):
        super().__init__(
            0.0,
            math.inf,
            transform=lambda raw: scale.to(raw) * base.transform(raw),
            inv_transform=lambda value: base.inverse_transform(value / scale.to(value)),
        )
        self.base = base


def _default_raw(kernel: Kernel, raw: torch.Tensor, constraint: Interval) -> torch.Tensor:
    """The raw value ``Kernel.__init__`` gives the lengthscale (``transform(0)``, or the constraint's initial value)."""
    init = constraint.transform(torch.zeros_like(raw))
    if constraint.initial_value is not None:
        init = torch.full_like(init, float(constraint.initial_value))
    return constraint.inverse_transform(init)


def _reduce_to(t: torch.Tensor, shape: torch.Size) -> torch.Tensor | None:
    """Average ``t`` over the dimensions it has beyond ``shape`` (and where ``shape`` is 1); None if they do not fit."""
    while t.dim() > len(shape):
        t = t.mean(0)
    t = t.reshape((1,) * (len(shape) - t.dim()) + tuple(t.shape))
    for i, (a, b) in enumerate(zip(t.shape, shape)):
        if b == 1 and a > 1:
            t = t.mean(i, keepdim=True)
        elif a not in (1, b):
            return None
    return t.expand(shape)


def _spread(x: torch.Tensor, ls_shape: torch.Size) -> torch.Tensor | None:
    """Standard deviation of ``x (*batch, n, d)`` per column, as a tensor of the lengthscale's shape ``(*b, 1, d|1)``.

    A non-ARD lengthscale gets the mean over the columns; a batch of inputs the mean over the batch when the
    kernel has none. Columns without spread (constant) get NaN.
    """
    s = x.std(-2, keepdim=True)  # (*batch, 1, d)
    s = torch.where(torch.isfinite(s) & (s > 0), s, torch.full_like(s, math.nan))
    if ls_shape[-1] == 1 and s.shape[-1] > 1:
        s = s.nanmean(-1, keepdim=True)
    if torch.isnan(s).all():
        return None
    return _reduce_to(s, ls_shape)


class Rescaling:
    """The lengthscales fitted in standardised units: ``(kernel, original constraint, scale)`` per kernel."""

    def __init__(self):
        self.entries: list[tuple[Kernel, Interval, torch.Tensor, str]] = []

    def messages(self) -> list[str]:
        out = []
        for _, _, scale, name in self.entries:
            s = scale[scale != 1]
            out.append(
                f"standardize_inputs: {name}'s lengthscale was fitted in units of its inputs' standard deviation "
                f"({s.min().item():.3g}" + (f" to {s.max().item():.3g}" if s.numel() > 1 else "") + "); it is "
                "reported in the inputs' units. Pass standardize_inputs=False, or initialise the lengthscale, to "
                "fit it as given."
            )
        return out

    def undo(self) -> None:
        """Fold the scale into the raw parameters and restore the original constraints (the value is unchanged)."""
        with torch.no_grad():
            for kernel, base, _, _ in self.entries:
                value = kernel.lengthscale
                kernel.register_constraint("raw_lengthscale", base)
                kernel.raw_lengthscale.copy_(base.inverse_transform(value))
        self.entries = []


def _visit(kernel: Kernel, x: torch.Tensor, names: dict, out: Rescaling, done: set) -> None:
    if kernel.active_dims is not None:
        x = x.index_select(-1, kernel.active_dims.to(x.device))
    if kernel.has_lengthscale and id(kernel) not in done and type(kernel).__name__ not in _NOT_INPUT_UNITS:
        done.add(id(kernel))
        raw = kernel._parameters.get("raw_lengthscale")
        constraint = kernel._modules.get("raw_lengthscale_constraint")
        if raw is not None and raw.requires_grad and _positive(constraint) and x.shape[-2] > 1:
            spread = _spread(x, raw.shape)
            if spread is not None:
                ratio = spread / constraint.transform(raw)
                off = torch.isfinite(ratio) & ((ratio < RESCALE_RANGE[0]) | (ratio > RESCALE_RANGE[1]))
                off = off & (raw == _default_raw(kernel, raw, constraint))
                if bool(off.any()):
                    scale = torch.where(off, spread, torch.ones_like(spread)).detach().clone()
                    kernel.register_constraint("raw_lengthscale", _Scaled(constraint, scale))
                    out.entries.append((kernel, constraint, scale, names.get(id(kernel), "") or type(kernel).__name__))
    if kernel._children_see_inputs:
        for child in kernel.children():
            if isinstance(child, Kernel):
                _visit(child, x, names, out, done)


def _positive(constraint) -> bool:
    return (
        constraint is not None
        and float(constraint.lower_bound.min()) == 0.0
        and math.isinf(float(constraint.upper_bound.max()))
    )


def lengthscales_in_units(kernel: Kernel, X: torch.Tensor) -> Rescaling:
    """Write every trainable lengthscale below ``kernel`` in units of its columns' standard deviation in ``X (n, d)``.

    Unlike :func:`standardize_lengthscales` this rescales whatever the current values (the estimators start
    them from the data): optimising afterwards follows the path of the same fit on standardised inputs. The
    values are unchanged; call :meth:`Rescaling.undo` after fitting.
    """
    out = Rescaling()
    std = X.std(-2) if X.shape[-2] > 1 else torch.ones(X.shape[-1], dtype=X.dtype)
    std = torch.where(torch.isfinite(std) & (std > 0), std, torch.ones_like(std)).detach()

    def visit(k: Kernel, cols: torch.Tensor) -> None:
        if k.active_dims is not None:
            cols = cols[k.active_dims.to(cols.device)]
        raw = k._parameters.get("raw_lengthscale") if k.has_lengthscale else None
        constraint = k._modules.get("raw_lengthscale_constraint")
        if raw is not None and raw.requires_grad and _positive(constraint) and type(k).__name__ not in _NOT_INPUT_UNITS:
            value = cols if raw.shape[-1] == cols.numel() else cols.mean().reshape(1)
            scale = value.to(raw).expand(raw.shape).clone()
            with torch.no_grad():
                current = constraint.transform(raw)
                k.register_constraint("raw_lengthscale", _Scaled(constraint, scale))
                raw.copy_(constraint.inverse_transform(current / scale))
            out.entries.append((k, constraint, scale, type(k).__name__))
        if k._children_see_inputs:
            for child in k.children():
                if isinstance(child, Kernel):
                    visit(child, cols)

    visit(kernel, std)
    return out


def standardize_lengthscales(model, inputs: tuple) -> Rescaling:
    """Fit default lengthscales off their inputs' scale in standardised units (see the module docstring).

    Args:
        model: an exact GP model; it is called once in training mode on ``inputs`` (no gradients).
        inputs: its training inputs, each ``(*batch, n, d)`` (or ``(n,)``).

    Returns:
        A :class:`Rescaling`; call :meth:`Rescaling.undo` after fitting.
    """
    out = Rescaling()
    seen: dict[int, tuple[Kernel, torch.Tensor]] = {}

    def record(kernel, args):
        if args and torch.is_tensor(args[0]) and id(kernel) not in seen:
            seen[id(kernel)] = (kernel, args[0])

    handles = [k.register_forward_pre_hook(record) for k in _top_kernels(model)]
    key_name = "_input_scale_key"
    had_key, old_key = key_name in model.__dict__, model.__dict__.get(key_name)
    try:
        # the model's own scale check is skipped here; it runs at the fit's first call, after the rescaling
        model.__dict__[key_name] = input_key(inputs)
        with torch.no_grad():
            model(*inputs)
    except Exception:  # a model that fails here fails in the fit's own first evaluation, which reports it
        return out
    finally:
        for h in handles:
            h.remove()
        if had_key:
            model.__dict__[key_name] = old_key
        else:
            model.__dict__.pop(key_name, None)
    names = {id(m): n for n, m in model.named_modules()}
    done: set = set()
    for kernel, x in seen.values():
        x = x.unsqueeze(-1) if x.dim() == 1 else x
        if x.is_floating_point():
            _visit(kernel, x.detach(), names, out, done)
    return out
