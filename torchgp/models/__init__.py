"""GP models (GPyTorch names)."""

from torchgp.models.approximate_gp import ApproximateGP
from torchgp.models.exact_gp import ExactGP
from torchgp.models.gp import GP
from torchgp.models.sgpr import SGPR

__all__ = ["GP", "ExactGP"]
__all__ += ["ApproximateGP", "SGPR"]
