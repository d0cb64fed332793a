"""Interval-type constraints: raw (unconstrained) value ↔ constrained value.

``Interval(a, b)``: value = a + (b - a) · sigmoid(raw).
``GreaterThan(a)``: value = a + softplus(raw); ``LessThan(b)``: value = b - softplus(-raw).
``Positive()`` is ``GreaterThan(0)``.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from torchgp.errors import InputError


def inv_softplus(y: torch.Tensor) -> torch.Tensor:
    """Inverse of softplus, stable for small and large ``y > 0``: y + log(-expm1(-y))."""
    return y + torch.log(-torch.expm1(-y))


def _logit(p: torch.Tensor) -> torch.Tensor:
    return torch.log(p) - torch.log1p(-p)


class Interval(nn.Module):
    """Constrain a parameter to ``(lower_bound, upper_bound)``.

    Args:
        lower_bound: lower end (may be ``-inf`` for :class:`LessThan`).
        upper_bound: upper end (may be ``+inf`` for :class:`GreaterThan`).
        initial_value: value a parameter registered with this constraint starts from.
    """

    def __init__(self, lower_bound, upper_bound, transform=None, inv_transform=None, initial_value=None):
        super().__init__()
        lower = torch.as_tensor(lower_bound, dtype=torch.get_default_dtype())
        upper = torch.as_tensor(upper_bound, dtype=torch.get_default_dtype())
        if torch.any(lower >= upper):
            raise InputError(f"Interval needs lower_bound < upper_bound; got {lower_bound} and {upper_bound}.")
        self.register_buffer("lower_bound", lower)
        self.register_buffer("upper_bound", upper)
        self._transform = transform
        self._inv_transform = inv_transform
        self.initial_value = initial_value

    # --- the map ---------------------------------------------------------------------------
    @property
    def enforced(self) -> bool:
        return True

    def transform(self, raw: torch.Tensor) -> torch.Tensor:
        """raw (unconstrained) → constrained value."""
        if self._transform is not None:
            return self._transform(raw)
        lo, hi = self.lower_bound.to(raw), self.upper_bound.to(raw)
        return lo + (hi - lo) * torch.sigmoid(raw)

    def inverse_transform(self, value: torch.Tensor) -> torch.Tensor:
        """constrained value → raw value; raises if ``value`` is outside the constraint."""
        if self._inv_transform is not None:
            return self._inv_transform(value)
        lo, hi = self.lower_bound.to(value), self.upper_bound.to(value)
        return _logit((value - lo) / (hi - lo))

    # --- checks ----------------------------------------------------------------------------
    def check(self, value: torch.Tensor) -> bool:
        """True when every entry lies strictly inside the bounds (and is finite)."""
        v = torch.as_tensor(value)
        lo, hi = self.lower_bound.to(v.device), self.upper_bound.to(v.device)
        return bool(torch.all(torch.isfinite(v)) and torch.all(v > lo) and torch.all(v < hi))

    def check_raw(self, raw: torch.Tensor) -> bool:
        return bool(torch.all(torch.isfinite(self.transform(raw))))

    def describe(self) -> str:
        lo, hi = float(self.lower_bound.min()), float(self.upper_bound.max())
        if math.isinf(hi):
            return f"> {lo:g}"
        if math.isinf(lo):
            return f"< {hi:g}"
        return f"in ({lo:g}, {hi:g})"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.describe()})"


class GreaterThan(Interval):
    """value = lower_bound + softplus(raw), so ``value > lower_bound``."""

    def __init__(self, lower_bound, transform=None, inv_transform=None, initial_value=None):
        super().__init__(lower_bound, math.inf, transform, inv_transform, initial_value)

    def transform(self, raw):
        if self._transform is not None:
            return self._transform(raw)
        return self.lower_bound.to(raw) + F.softplus(raw)

    def inverse_transform(self, value):
        if self._inv_transform is not None:
            return self._inv_transform(value)
        return inv_softplus(value - self.lower_bound.to(value))


class Positive(GreaterThan):
    """value = softplus(raw) > 0."""

    def __init__(self, transform=None, inv_transform=None, initial_value=None):
        super().__init__(0.0, transform, inv_transform, initial_value)


class LessThan(Interval):
    """value = upper_bound - softplus(-raw), so ``value < upper_bound``."""

    def __init__(self, upper_bound, transform=None, inv_transform=None, initial_value=None):
        super().__init__(-math.inf, upper_bound, transform, inv_transform, initial_value)

    def transform(self, raw):
        if self._transform is not None:
            return self._transform(raw)
        return self.upper_bound.to(raw) - F.softplus(-raw)

    def inverse_transform(self, value):
        if self._inv_transform is not None:
            return self._inv_transform(value)
        return -inv_softplus(self.upper_bound.to(value) - value)
