r"""The trace term of the collapsed SGPR bound (Titsias 2009, eq. 9).

.. math:: -\frac{1}{2\sigma^2}\operatorname{tr}\big(K_{XX} - Q_{XX}\big),\qquad
          Q_{XX} = K_{XZ} K_{ZZ}^{-1} K_{ZX}

With a heteroskedastic or fixed noise the sum runs over :math:`(K_{ii} - Q_{ii}) / \sigma_i^2`.
"""

from __future__ import annotations

import torch

from torchgp.linalg.operators import Operator
from torchgp.mlls.added_loss_term import AddedLossTerm


def _diagonal(cov) -> torch.Tensor:
    """``(*batch, n)`` diagonal of an operator or a dense ``(*batch, n, n)`` tensor."""
    if isinstance(cov, Operator):
        return cov.diagonal()
    return torch.diagonal(cov, dim1=-2, dim2=-1)


class InducingPointKernelAddedLossTerm(AddedLossTerm):
    r"""SGPR's regulariser :math:`-\tfrac12 \sum_i (K_{ii} - Q_{ii}) / \sigma_i^2`.

    Args:
        prior_dist: ``N(0, K_XX)`` over the training inputs (only its diagonal is read).
        variational_dist: ``N(0, Q_XX)``, the Nyström approximation (only its diagonal is read).
        likelihood: the Gaussian likelihood whose noise :math:`\sigma^2` scales the term.

    Shapes:
        both distributions ``(*batch, n)`` → ``loss()`` ``(*batch)``.
    """

    def __init__(self, prior_dist, variational_dist, likelihood):
        self.prior_dist = prior_dist
        self.variational_dist = variational_dist
        self.likelihood = likelihood

    def loss(self, *params) -> torch.Tensor:
        # Titsias (2009) eq. 9: the gap between K_XX and Q_XX on the diagonal, per unit noise.
        gap = _diagonal(self.prior_dist.lazy_covariance_matrix) - _diagonal(
            self.variational_dist.lazy_covariance_matrix
        )
        noise = self.likelihood._noise(gap, *params)
        return -0.5 * (gap / noise).sum(dim=-1)
