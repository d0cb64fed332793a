"""Constraints map an unconstrained ``raw_*`` parameter to its valid range (GPyTorch names)."""

from torchgp.constraints.constraints import GreaterThan, Interval, LessThan, Positive

__all__ = ["Interval", "GreaterThan", "LessThan", "Positive"]
