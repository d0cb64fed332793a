r"""KL between a variational and a prior Gaussian over latent inputs (Bayesian GPLVM).

.. math:: \frac{1}{n\,D}\sum_{j} \mathrm{KL}\big(q(x_{\cdot j})\,\|\,p(x_{\cdot j})\big)

(the latent-input KL of the Bayesian GPLVM bound, Titsias & Lawrence 2010), divided by ``n`` because the objectives are per datum and by the
output dimension ``D`` because the variational objective repeats the term once per output.
"""

from __future__ import annotations

import torch
from torch.distributions import kl_divergence

from torchgp.mlls.added_loss_term import AddedLossTerm


class KLGaussianAddedLossTerm(AddedLossTerm):
    """``KL(q(X) ‖ p(X)) / (n · data_dim)``.

    Args:
        q_x: variational distribution over the latent inputs, batch ``(latent_dim,)`` of ``n``-point MVNs
            (or any distribution whose KL to ``p_x`` has leading dimension ``latent_dim``).
        p_x: the prior over the latent inputs, of the same shape.
        n: number of data points (rows of the latent inputs).
        data_dim: number of output dimensions ``D``.

    Shapes:
        ``loss()`` → scalar.
    """

    def __init__(self, q_x, p_x, n: int, data_dim: int):
        self.q_x = q_x
        self.p_x = p_x
        self.n = n
        self.data_dim = data_dim

    def loss(self) -> torch.Tensor:
        # a torchgp prior is a Module wrapping a torch distribution: the KL is registered for the latter
        p_x = self.p_x.distribution() if callable(getattr(self.p_x, "distribution", None)) else self.p_x
        kl_per_latent_dim = kl_divergence(self.q_x, p_x).sum(dim=0)
        return kl_per_latent_dim.sum() / self.n / self.data_dim
