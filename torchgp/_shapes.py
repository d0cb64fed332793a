"""Shape helpers for hot paths."""

from __future__ import annotations

import math

import torch


def all_finite(t: torch.Tensor) -> bool:
    """Whether every entry of ``t`` is finite; a scalar is checked without a tensor round trip (~0.3 µs vs ~8 µs)."""
    return math.isfinite(t.item()) if t.numel() == 1 else bool(torch.isfinite(t).all())


def any_nonzero(t: torch.Tensor) -> bool:
    """Whether any entry of ``t`` is non-zero (scalar fast path)."""
    return t.item() != 0 if t.numel() == 1 else bool(t.any())


def broadcast_shapes(*shapes) -> torch.Size:
    """``torch.broadcast_shapes`` with a fast path for the common cases (all equal, or all but one empty).

    ``torch.broadcast_shapes`` costs ~15 µs a call in Python, which shows at n ≈ 100.
    """
    first = shapes[0]
    if all(s == first for s in shapes):
        return torch.Size(first)
    shapes = [tuple(s) for s in shapes]
    nonempty = [s for s in shapes if s and any(d != 1 for d in s)]
    if not nonempty:
        return torch.Size(max(shapes, key=len))
    first = nonempty[0]
    if all(s == first for s in nonempty) and all(len(s) <= len(first) for s in shapes):
        return torch.Size(first)
    # NumPy's broadcasting rule, right-aligned; in Python because torch.broadcast_shapes' first call in a
    # process imports sympy (about a second)
    out = [1] * max(len(s) for s in shapes)
    for s in shapes:
        for i, d in enumerate(s, len(out) - len(s)):
            if d == 1 or d == out[i]:
                continue
            if out[i] != 1:
                raise RuntimeError(
                    f"Shape mismatch: objects cannot be broadcast to a single shape; got {[list(s) for s in shapes]}."
                )
            out[i] = d
    return torch.Size(out)
