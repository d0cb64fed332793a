"""Base of the training objectives: holds the likelihood and the model."""

from __future__ import annotations

import torch

from torchgp.module import Module


class MarginalLogLikelihood(Module):
    """``mll(output, target)`` → objective to maximise (GPyTorch interface).

    Args:
        likelihood: the model's likelihood.
        model: the model (its priors, and the likelihood's, are added to the objective).
    """

    def __init__(self, likelihood, model):
        super().__init__()
        self.likelihood = likelihood
        self.model = model

    def _log_prior(self) -> torch.Tensor | float:
        """Σ log p(θ) over every prior registered below the model and the likelihood (each module once)."""
        total = 0.0
        for module in self.modules():  # modules() visits each module once; no name strings on this hot path
            closures = getattr(module, "_prior_closures", None)
            if closures:
                for name, (closure, _) in closures.items():
                    total = total + module._modules[name].log_prob(closure(module)).sum()
        return total
