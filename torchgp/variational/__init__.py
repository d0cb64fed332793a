"""Variational distributions and strategies for approximate GPs (GPyTorch names)."""

from torchgp.variational._variational_distribution import _VariationalDistribution
from torchgp.variational.cholesky_variational_distribution import CholeskyVariationalDistribution
from torchgp.variational.delta_variational_distribution import DeltaVariationalDistribution
from torchgp.variational.mean_field_variational_distribution import MeanFieldVariationalDistribution
from torchgp.variational.natural_variational_distribution import (
    NaturalVariationalDistribution,
    TrilNaturalVariationalDistribution,
)
from torchgp.variational.variational_strategy import (
    UnwhitenedVariationalStrategy,
    VariationalStrategy,
    _VariationalStrategy,
)

__all__ = [
    "_VariationalDistribution",
    "_VariationalStrategy",
    "CholeskyVariationalDistribution",
    "MeanFieldVariationalDistribution",
    "DeltaVariationalDistribution",
    "NaturalVariationalDistribution",
    "TrilNaturalVariationalDistribution",
    "VariationalStrategy",
    "UnwhitenedVariationalStrategy",
]
