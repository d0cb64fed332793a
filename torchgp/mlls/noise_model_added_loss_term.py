r"""The exact MLL of a GP noise model, added to the objective of the model it serves.

A heteroskedastic likelihood whose log-noise is itself an :class:`~torchgp.models.ExactGP` fitted to
observed log-variances registers this term, so the main model's objective also trains the noise GP:

.. math:: \mathcal L = \mathcal L_{\text{main}} + \frac1n \log p(z \mid X, \theta_{\text{noise}})
"""

from __future__ import annotations

import torch

from torchgp.mlls.added_loss_term import AddedLossTerm


class NoiseModelAddedLossTerm(AddedLossTerm):
    """Per-datum exact MLL of ``noise_model`` on its own training data.

    Args:
        noise_model: an :class:`~torchgp.models.ExactGP` with a Gaussian likelihood.

    Shapes:
        ``loss(*inputs)`` with the noise model's inputs ``(*batch, n, d)`` → ``(*batch)``.
    """

    def __init__(self, noise_model):
        from torchgp.mlls.exact_marginal_log_likelihood import ExactMarginalLogLikelihood

        self.noise_mll = ExactMarginalLogLikelihood(noise_model.likelihood, noise_model)

    def loss(self, *params) -> torch.Tensor:
        model = self.noise_mll.model
        inputs = params or tuple(model.train_inputs)
        return self.noise_mll(model(*inputs), model.train_targets)
