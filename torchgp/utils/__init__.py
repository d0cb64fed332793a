"""Utilities under GPyTorch's ``gpytorch.utils`` names: grids and interpolation for KISS-GP, caching,
deprecation helpers, nearest neighbours, warning and error classes.

``torchgp.utils.quadrature`` is imported on first access (it lives with the likelihoods).
"""

from __future__ import annotations

import importlib

from torchgp.utils import (
    cholesky,
    deprecation,
    errors,
    generic,
    grid,
    interpolation,
    memoize,
    transforms,
    warnings,
)
from torchgp.utils.memoize import cached
from torchgp.utils.nearest_neighbors import NNUtil
from torchgp.utils.sum_interaction_terms import sum_interaction_terms

__all__ = [
    "cached",
    "deprecation",
    "errors",
    "generic",
    "grid",
    "interpolation",
    "quadrature",
    "sum_interaction_terms",
    "transforms",
    "warnings",
    "NNUtil",
]

_OUTSIDE_ALL = (cholesky, memoize)  # submodules at GPyTorch's paths that its __all__ does not list


def __getattr__(name: str):
    if name == "quadrature":
        return importlib.import_module("torchgp.utils.quadrature")
    raise AttributeError(f"module 'torchgp.utils' has no attribute {name!r}")
