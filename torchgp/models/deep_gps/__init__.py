"""Deep GPs (Salimbeni & Deisenroth 2017; GPyTorch's ``gpytorch.models.deep_gps``)."""

from __future__ import annotations

import warnings

from torchgp.models.deep_gps.deep_gp import DeepGP, DeepGPLayer, DeepLikelihood


class AbstractDeepGP(DeepGP):
    """GPyTorch's former name of :class:`DeepGP` (deprecated)."""

    def __init__(self, *args, **kwargs):
        warnings.warn("AbstractDeepGP is deprecated: use DeepGP.", DeprecationWarning, stacklevel=2)
        super().__init__(*args, **kwargs)


class AbstractDeepGPLayer(DeepGPLayer):
    """GPyTorch's former name of :class:`DeepGPLayer` (deprecated)."""

    def __init__(self, *args, **kwargs):
        warnings.warn("AbstractDeepGPLayer is deprecated: use DeepGPLayer.", DeprecationWarning, stacklevel=2)
        super().__init__(*args, **kwargs)


__all__ = ["DeepGPLayer", "DeepGP", "AbstractDeepGPLayer", "AbstractDeepGP", "DeepLikelihood"]
