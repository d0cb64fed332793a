"""GP models (GPyTorch names)."""

from torchgp.models.exact_gp import ExactGP
from torchgp.models.gp import GP

__all__ = ["GP", "ExactGP"]
