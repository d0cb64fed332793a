r"""``IndexKernel``: covariance between discrete indices (tasks), :math:`B = WW^\top + \mathrm{diag}(v)`."""

from __future__ import annotations

import torch

from torchgp._shapes import broadcast_shapes
from torchgp.constraints import Positive
from torchgp.errors import InputError
from torchgp.kernels.kernel import Kernel


class IndexKernel(Kernel):
    r"""Free-form task covariance of low rank plus diagonal (Bonilla et al. 2008).

    .. math:: k(i, j) = B_{ij},\qquad B = W W^\top + \mathrm{diag}(v),\quad W \in \mathbb R^{t \times r}

    Args:
        num_tasks: t.
        rank: r (default 1).
        prior: optional prior on ``covar_matrix``.
        var_constraint: constraint on v (default ``Positive()``).

    Shapes:
        ``x1 (*batch, n, 1)``, ``x2 (*batch, m, 1)`` holding integer task indices (as floats or
        longs) → ``(*batch, n, m)``.
    """

    def __init__(self, num_tasks: int, rank: int = 1, prior=None, var_constraint=None, **kwargs):
        if rank > num_tasks:
            raise InputError(f"IndexKernel: rank ({rank}) cannot exceed num_tasks ({num_tasks}).")
        super().__init__(**kwargs)
        self.num_tasks = num_tasks
        self.covar_factor = torch.nn.Parameter(torch.randn(*self.batch_shape, num_tasks, rank))
        constraint = Positive() if var_constraint is None else var_constraint
        # raw var ~ N(0, 1), drawn right after the factor: GPyTorch's initial values and random stream
        self.register_constrained("var", constraint.transform(torch.randn(*self.batch_shape, num_tasks)), constraint)
        if prior is not None:
            self.register_prior("IndexKernelPrior", prior, lambda m: m.covar_matrix)

    @property
    def covar_matrix(self) -> torch.Tensor:
        """B, ``(*batch, t, t)``."""
        W = self.covar_factor
        return W @ W.mT + torch.diag_embed(self.var)

    def _indices(self, x):
        i = x[..., 0]
        idx = i.long()
        if (idx != i).any() or (idx < 0).any() or (idx >= self.num_tasks).any():
            raise InputError(
                f"IndexKernel: inputs must be integer task indices in [0, {self.num_tasks}); got values "
                f"from {i.min().item()} to {i.max().item()}."
            )
        return idx

    def forward_diag(self, x1, x2, **params):
        """``B[i_k, j_k]`` for aligned rows, ``(*batch, n)``."""
        B = self.covar_matrix
        i, j = self._indices(x1), self._indices(x2)
        if B.dim() == 2:
            return B[i, j]
        batch = broadcast_shapes(B.shape[:-2], i.shape[:-1], j.shape[:-1])
        rows = torch.gather(
            B.expand(*batch, *B.shape[-2:]),
            -2,
            i.expand(*batch, i.shape[-1]).unsqueeze(-1).expand(*batch, i.shape[-1], B.shape[-1]),
        )
        return torch.gather(rows, -1, j.expand(*batch, j.shape[-1]).unsqueeze(-1)).squeeze(-1)

    def forward(self, x1, x2, **params):
        B = self.covar_matrix
        i, j = self._indices(x1), self._indices(x2)
        if B.dim() == 2:
            return B[i.unsqueeze(-1), j.unsqueeze(-2)]
        rows = torch.gather(B, -2, i.unsqueeze(-1).expand(*B.shape[:-2], i.shape[-1], B.shape[-1]))
        return torch.gather(rows, -1, j.unsqueeze(-2).expand(*rows.shape[:-1], j.shape[-1]))
