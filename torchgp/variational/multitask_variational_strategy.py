"""``MultitaskVariationalStrategy``: GPyTorch's older name of :class:`IndependentMultitaskVariationalStrategy`."""

from __future__ import annotations

from torchgp.variational.independent_multitask_variational_strategy import IndependentMultitaskVariationalStrategy

__all__ = ["MultitaskVariationalStrategy"]


class MultitaskVariationalStrategy(IndependentMultitaskVariationalStrategy):
    """Same as :class:`IndependentMultitaskVariationalStrategy` (independent tasks from a batch of variational GPs)."""
