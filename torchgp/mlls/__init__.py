"""Training objectives (GPyTorch names)."""

from torchgp.mlls._approximate_mll import _ApproximateMarginalLogLikelihood
from torchgp.mlls.exact_marginal_log_likelihood import ExactMarginalLogLikelihood
from torchgp.mlls.gamma_robust_elbo import GammaRobustVariationalELBO
from torchgp.mlls.marginal_log_likelihood import MarginalLogLikelihood
from torchgp.mlls.predictive_log_likelihood import PredictiveLogLikelihood
from torchgp.mlls.sgpr_bound import SGPRMarginalLogLikelihood
from torchgp.mlls.variational_elbo import VariationalELBO

__all__ = ["MarginalLogLikelihood", "ExactMarginalLogLikelihood"]
__all__ += [
    "VariationalELBO",
    "PredictiveLogLikelihood",
    "GammaRobustVariationalELBO",
    "_ApproximateMarginalLogLikelihood",
]
__all__ += ["SGPRMarginalLogLikelihood"]
