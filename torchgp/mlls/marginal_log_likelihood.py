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
        """Σ log p(θ) over every prior registered below the model and the likelihood (counted once)."""
        total, seen = 0.0, set()
        for _, module, prior, closure, _ in self.named_priors():
            key = (id(module), id(prior))
            if key not in seen:
                seen.add(key)
                total = total + prior.log_prob(closure(module)).sum()
        return total
