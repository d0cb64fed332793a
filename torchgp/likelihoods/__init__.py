"""Likelihoods p(y | f) (GPyTorch names)."""

from torchgp.likelihoods.bernoulli import BernoulliLikelihood
from torchgp.likelihoods.beta import BetaLikelihood
from torchgp.likelihoods.dirichlet import DirichletClassificationLikelihood
from torchgp.likelihoods.gaussian import (
    FixedNoiseGaussianLikelihood,
    GaussianLikelihood,
    HeteroskedasticGaussianLikelihood,
    _GaussianLikelihoodBase,  # noqa: F401  (imported by models and mlls from here)
)
from torchgp.likelihoods.laplace import LaplaceLikelihood
from torchgp.likelihoods.likelihood import Likelihood, _OneDimensionalLikelihood
from torchgp.likelihoods.likelihood_list import LikelihoodList
from torchgp.likelihoods.missing_obs import GaussianLikelihoodWithMissingObs
from torchgp.likelihoods.multitask_gaussian import (
    HadamardGaussianLikelihood,
    MultitaskGaussianLikelihood,
    _MultitaskGaussianLikelihoodBase,
)
from torchgp.likelihoods.negative_binomial import NegativeBinomialLikelihood
from torchgp.likelihoods.noise_models import FixedGaussianNoise, HeteroskedasticNoise, HomoskedasticNoise
from torchgp.likelihoods.poisson import PoissonLikelihood
from torchgp.likelihoods.quadrature import GaussHermiteQuadrature1D
from torchgp.likelihoods.softmax import SoftmaxLikelihood
from torchgp.likelihoods.student_t import StudentTLikelihood

__all__ = [
    "Likelihood",
    "GaussianLikelihood",
    "FixedNoiseGaussianLikelihood",
    "HeteroskedasticGaussianLikelihood",
    "HomoskedasticNoise",
    "FixedGaussianNoise",
    "HeteroskedasticNoise",
    "GaussHermiteQuadrature1D",
    "BernoulliLikelihood",
    "BetaLikelihood",
    "LaplaceLikelihood",
    "PoissonLikelihood",
    "SoftmaxLikelihood",
    "StudentTLikelihood",
]
__all__ += [
    "LikelihoodList",
    "DirichletClassificationLikelihood",
    "NegativeBinomialLikelihood",
    "GaussianLikelihoodWithMissingObs",
]
__all__ += ["_OneDimensionalLikelihood"]
__all__ += ["MultitaskGaussianLikelihood", "HadamardGaussianLikelihood", "_MultitaskGaussianLikelihoodBase"]
