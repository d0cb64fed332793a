"""Priors over hyperparameters (GPyTorch names); their log-densities join the training loss.

Every prior is both an ``nn.Module`` (parameters as buffers) and a ``torch.distributions.Distribution``.
"""

from torchgp.priors.horseshoe_prior import HorseshoePrior
from torchgp.priors.lkj_prior import LKJCholeskyFactorPrior, LKJCovariancePrior, LKJPrior
from torchgp.priors.prior import Prior
from torchgp.priors.priors import (
    GammaPrior,
    HalfCauchyPrior,
    HalfNormalPrior,
    LogNormalPrior,
    MultivariateNormalPrior,
    NormalPrior,
    SmoothedBoxPrior,
    UniformPrior,
)

__all__ = [
    "Prior",
    "NormalPrior",
    "LogNormalPrior",
    "GammaPrior",
    "HalfCauchyPrior",
    "HalfNormalPrior",
    "UniformPrior",
    "SmoothedBoxPrior",
    "MultivariateNormalPrior",
    "HorseshoePrior",
    "LKJPrior",
    "LKJCholeskyFactorPrior",
    "LKJCovariancePrior",
]
