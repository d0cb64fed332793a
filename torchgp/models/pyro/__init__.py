"""Approximate GPs trained with Pyro (GPyTorch's ``gpytorch.models.pyro``); Pyro is imported only when used."""

from torchgp.models.pyro._pyro_mixin import _PyroMixin
from torchgp.models.pyro.pyro_gp import PyroGP

__all__ = ["PyroGP", "_PyroMixin"]
