"""Training objectives (GPyTorch names)."""

from torchgp.mlls._approximate_mll import _ApproximateMarginalLogLikelihood
from torchgp.mlls.added_loss_term import AddedLossTerm
from torchgp.mlls.deep_approximate_mll import DeepApproximateMLL
from torchgp.mlls.deep_predictive_log_likelihood import DeepPredictiveLogLikelihood
from torchgp.mlls.exact_marginal_log_likelihood import ExactMarginalLogLikelihood
from torchgp.mlls.gamma_robust_elbo import GammaRobustVariationalELBO
from torchgp.mlls.inducing_point_kernel_added_loss_term import InducingPointKernelAddedLossTerm
from torchgp.mlls.kl_gaussian_added_loss_term import KLGaussianAddedLossTerm
from torchgp.mlls.leave_one_out_pseudo_likelihood import LeaveOneOutPseudoLikelihood
from torchgp.mlls.marginal_log_likelihood import MarginalLogLikelihood
from torchgp.mlls.noise_model_added_loss_term import NoiseModelAddedLossTerm
from torchgp.mlls.predictive_log_likelihood import PredictiveLogLikelihood
from torchgp.mlls.sgpr_bound import SGPRMarginalLogLikelihood
from torchgp.mlls.sum_marginal_log_likelihood import SumMarginalLogLikelihood
from torchgp.mlls.variational_elbo import VariationalELBO

__all__ = ["MarginalLogLikelihood", "ExactMarginalLogLikelihood"]
__all__ += [
    "VariationalELBO",
    "PredictiveLogLikelihood",
    "GammaRobustVariationalELBO",
    "_ApproximateMarginalLogLikelihood",
]
__all__ += ["SGPRMarginalLogLikelihood"]
__all__ += ["SumMarginalLogLikelihood", "LeaveOneOutPseudoLikelihood"]
__all__ += ["AddedLossTerm", "InducingPointKernelAddedLossTerm", "KLGaussianAddedLossTerm", "NoiseModelAddedLossTerm"]
__all__ += ["DeepApproximateMLL", "DeepPredictiveLogLikelihood"]
