"""Likelihoods p(y | f) (GPyTorch names)."""

from torchgp.likelihoods.gaussian import (
    FixedNoiseGaussianLikelihood,
    GaussianLikelihood,
    HeteroskedasticGaussianLikelihood,
    _GaussianLikelihoodBase,
)
from torchgp.likelihoods.likelihood import Likelihood
from torchgp.likelihoods.noise_models import FixedGaussianNoise, HeteroskedasticNoise, HomoskedasticNoise
from torchgp.likelihoods.quadrature import GaussHermiteQuadrature1D

__all__ = [
    "Likelihood",
    "GaussianLikelihood",
    "FixedNoiseGaussianLikelihood",
    "HeteroskedasticGaussianLikelihood",
    "HomoskedasticNoise",
    "FixedGaussianNoise",
    "HeteroskedasticNoise",
    "GaussHermiteQuadrature1D",
]
