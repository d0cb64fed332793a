"""Variational distributions and strategies for approximate GPs (GPyTorch names)."""

from torchgp.variational._variational_distribution import _VariationalDistribution
from torchgp.variational.cholesky_variational_distribution import CholeskyVariationalDistribution
from torchgp.variational.delta_variational_distribution import DeltaVariationalDistribution
from torchgp.variational.independent_multitask_variational_strategy import IndependentMultitaskVariationalStrategy
from torchgp.variational.lmc_variational_strategy import LMCVariationalStrategy
from torchgp.variational.mean_field_variational_distribution import MeanFieldVariationalDistribution
from torchgp.variational.multitask_variational_strategy import MultitaskVariationalStrategy
from torchgp.variational.natural_variational_distribution import (
    NaturalVariationalDistribution,
    TrilNaturalVariationalDistribution,
    _NaturalVariationalDistribution,
)
from torchgp.variational.variational_strategy import (
    UnwhitenedVariationalStrategy,
    VariationalStrategy,
    _VariationalStrategy,
)

__all__ = [
    "_VariationalDistribution",
    "_VariationalStrategy",
    "_NaturalVariationalDistribution",
    "CholeskyVariationalDistribution",
    "MeanFieldVariationalDistribution",
    "DeltaVariationalDistribution",
    "NaturalVariationalDistribution",
    "TrilNaturalVariationalDistribution",
    "VariationalStrategy",
    "UnwhitenedVariationalStrategy",
]
__all__ += ["IndependentMultitaskVariationalStrategy", "LMCVariationalStrategy", "MultitaskVariationalStrategy"]

from torchgp.variational.additive_grid_interpolation_variational_strategy import (  # noqa: E402
    AdditiveGridInterpolationVariationalStrategy,
)
from torchgp.variational.grid_interpolation_variational_strategy import (  # noqa: E402
    GridInterpolationVariationalStrategy,
)

__all__ += ["GridInterpolationVariationalStrategy", "AdditiveGridInterpolationVariationalStrategy"]

from torchgp.variational.nearest_neighbor_variational_strategy import NNVariationalStrategy  # noqa: E402

__all__ += ["NNVariationalStrategy"]

from torchgp.variational.orthogonally_decoupled_variational_strategy import (  # noqa: E402
    OrthogonallyDecoupledVariationalStrategy,
)

__all__ += ["OrthogonallyDecoupledVariationalStrategy"]

from torchgp.variational.batch_decoupled_variational_strategy import BatchDecoupledVariationalStrategy  # noqa: E402

__all__ += ["BatchDecoupledVariationalStrategy"]

from torchgp.variational.ciq_variational_strategy import CiqVariationalStrategy  # noqa: E402
from torchgp.variational.large_batch_variational_strategy import LargeBatchVariationalStrategy  # noqa: E402

__all__ += ["CiqVariationalStrategy", "LargeBatchVariationalStrategy"]
