r"""Extra terms a module adds to every training objective (GPyTorch's ``AddedLossTerm``).

A module declares a slot with :meth:`torchgp.Module.register_added_loss_term`, fills it in its
``forward`` with :meth:`torchgp.Module.update_added_loss_term`, and the objectives add
``term.loss()``: :class:`~torchgp.mlls.ExactMarginalLogLikelihood` adds it to the log marginal
before dividing by ``n``; the variational objectives subtract it from the per-datum bound
(GPyTorch's conventions, so a term written for GPyTorch means the same here).
"""

from __future__ import annotations

import torch


class AddedLossTerm:
    """Base of the added loss terms: subclasses implement :meth:`loss`.

    Example:
        >>> import torch
        >>> class Fixed(AddedLossTerm):
        ...     def loss(self):
        ...         return torch.tensor(2.0)
        >>> Fixed().loss().item()
        2.0
    """

    def loss(self, *params) -> torch.Tensor:
        """The term's value, a tensor broadcastable to the objective's batch shape ``(*batch)``."""
        raise NotImplementedError(f"{type(self).__name__} must implement loss().")
