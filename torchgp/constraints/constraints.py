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


def _eps(*tensors: torch.Tensor) -> float:
    """The coarsest relative rounding step among the floating dtypes of ``tensors`` (float32's if none)."""
    return max((torch.finfo(t.dtype).eps for t in tensors if t.is_floating_point()), default=torch.finfo().eps)


def _rounded_bound(v: torch.Tensor, bound: torch.Tensor, given: torch.Tensor) -> torch.Tensor:
    """Where ``v`` equals ``bound`` only because its dtype cannot hold the ``given`` bound exactly.

    ``1e-4`` is ``9.99999975e-05`` in float32: a user who asks for the bound itself gets that value, which
    the dtype cannot tell from one just inside, so it is accepted (and :meth:`Interval.inverse_transform`
    maps it just inside). A bound the dtype holds exactly (``3.0``) stays outside the open interval.
    """
    if not v.is_floating_point():
        return torch.zeros_like(v, dtype=torch.bool)
    at_bound = v == bound.to(device=v.device, dtype=v.dtype)
    inexact = given.to(v.dtype).to(torch.float64) != given
    return at_bound & inexact.to(v.device)


def _inside_offset(gap: torch.Tensor, bound: torch.Tensor) -> torch.Tensor:
    """``gap = |value - bound|`` kept at least one rounding step of the bound above 0 (finite raw values)."""
    step = _eps(gap) * bound.to(gap).abs().clamp_min(torch.finfo(gap.dtype).tiny)
    return torch.maximum(gap, step)


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
        # the bounds as given (float64, not buffers: .to(dtype) leaves them), to tell rounding from a value outside
        self._given = (
            torch.as_tensor(lower_bound, dtype=torch.float64),
            torch.as_tensor(upper_bound, dtype=torch.float64),
        )
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
        p = (value - lo) / (hi - lo)
        e = _eps(value)
        return _logit(p.clamp(e, 1 - e))  # a value at a bound (see rounding_slack) maps just inside

    # --- checks ----------------------------------------------------------------------------
    def check(self, value: torch.Tensor) -> bool:
        """True when every entry is finite and strictly inside the bounds.

        A value equal to a bound only through its dtype's rounding of the bound as given counts as
        inside: ``GreaterThan(1e-4)`` takes ``1e-4`` in float32 (``9.99999975e-05``), not ``3.0`` for
        ``Interval(-2, 3)``.
        """
        v = torch.as_tensor(value)
        lo, hi = self.lower_bound.to(v.device), self.upper_bound.to(v.device)
        given = getattr(self, "_given", (lo.to(torch.float64), hi.to(torch.float64)))
        v64 = v.to(torch.float64)
        above = (v64 > lo.to(torch.float64)) | _rounded_bound(v, lo, given[0])
        below = (v64 < hi.to(torch.float64)) | _rounded_bound(v, hi, given[1])
        return bool(torch.all(torch.isfinite(v)) and torch.all(above) and torch.all(below))

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
        if self._zero_lower_bound():  # Positive(): softplus alone, one autograd node and one operation fewer
            return F.softplus(raw)
        return self.lower_bound.to(raw) + F.softplus(raw)

    def _zero_lower_bound(self) -> bool:
        """Whether ``lower_bound`` is all zeros; read once per buffer object and version (a load or ``.to`` redoes it)."""
        lo = self.lower_bound
        seen = self.__dict__.get("_zero_seen")
        if seen is not None and seen[0] is lo and seen[1] == lo._version:
            return seen[2]
        zero = bool((lo == 0).all())
        self.__dict__["_zero_seen"] = (lo, lo._version, zero)
        return zero

    def inverse_transform(self, value):
        if self._inv_transform is not None:
            return self._inv_transform(value)
        lo = self.lower_bound.to(value)
        return inv_softplus(_inside_offset(value - lo, lo))  # a value at the bound maps just above it


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
        hi = self.upper_bound.to(value)
        return -inv_softplus(_inside_offset(hi - value, hi))  # a value at the bound maps just below it
