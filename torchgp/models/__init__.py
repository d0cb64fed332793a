"""GP models (GPyTorch names)."""

from torchgp.models import (
    deep_gps,  # gpytorch.models.deep_gps
    exact_prediction_strategies,  # noqa: F401  (gpytorch.models.exact_prediction_strategies)
    gplvm,  # gpytorch.models.gplvm
    pyro,  # gpytorch.models.pyro (Pyro itself is imported only when used)
)
from torchgp.models.approximate_gp import ApproximateGP, VariationalGP
from torchgp.models.exact_gp import ExactGP
from torchgp.models.gp import GP
from torchgp.models.laplace_classifier import LaplaceGPClassifier
from torchgp.models.model_list import AbstractModelList, IndependentModelList
from torchgp.models.pyro import PyroGP
from torchgp.models.sgpr import SGPR

__all__ = ["GP", "ExactGP"]
__all__ += ["ApproximateGP", "SGPR"]
__all__ += ["VariationalGP"]
__all__ += ["AbstractModelList", "IndependentModelList"]
__all__ += ["LaplaceGPClassifier"]
__all__ += ["deep_gps"]
__all__ += ["gplvm"]
__all__ += ["PyroGP", "pyro"]
