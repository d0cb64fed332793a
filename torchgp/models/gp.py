"""Base of every GP model."""

from torchgp.module import Module


class GP(Module):
    """Marker base class of GP models (exact, approximate, lists)."""
