"""Small real datasets shipped with torchgp."""

from torchgp.datasets.co2 import load_co2

__all__ = ["load_co2"]
