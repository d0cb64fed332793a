"""Training objectives (GPyTorch names)."""

from torchgp.mlls.exact_marginal_log_likelihood import ExactMarginalLogLikelihood
from torchgp.mlls.marginal_log_likelihood import MarginalLogLikelihood

__all__ = ["MarginalLogLikelihood", "ExactMarginalLogLikelihood"]
