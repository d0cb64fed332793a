"""Optimisers (GPyTorch names)."""

from torchgp.optim.ngd import NGD

__all__ = ["NGD"]
