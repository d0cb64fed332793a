"""Priors over hyperparameters (GPyTorch names); their log-densities join the training loss."""

from torchgp.priors.priors import (
    GammaPrior,
    HalfCauchyPrior,
    HalfNormalPrior,
    LogNormalPrior,
    MultivariateNormalPrior,
    NormalPrior,
    Prior,
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
]
