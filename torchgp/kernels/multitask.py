r"""Multitask kernels over (point, task) pairs: intrinsic coregionalisation and its sums.

* :class:`MultitaskKernel` (ICM, Bonilla et al. 2008): :math:`k((x, i), (x', j)) = B_{ij}\, k_x(x, x')`, i.e. the
  matrix ``K_x ⊗ B`` over all ``n`` points × ``t`` tasks (interleaved rows, task fastest), with
  ``B = W Wᵀ + diag(v)`` from an :class:`~torchgp.kernels.IndexKernel`. Kept as a
  :class:`~torchgp.linalg.operators.KroneckerProductOperator`, so the exact GP is solved per factor.
* :class:`LCMKernel` (linear model of coregionalisation): :math:`\sum_q K_q ⊗ B_q`.
"""

from __future__ import annotations

import torch

from torchgp._shapes import broadcast_shapes
from torchgp.errors import InputError
from torchgp.kernels.index import IndexKernel
from torchgp.kernels.kernel import Kernel
from torchgp.linalg.operators import DenseOperator, KroneckerProductOperator
from torchgp.linalg.operators.kronecker import kron_vectors
from torchgp.linalg.operators.structured import SumOperator

__all__ = ["MultitaskKernel", "LCMKernel"]


class MultitaskKernel(Kernel):
    r"""ICM kernel ``K_x ⊗ B`` for ``t`` tasks observed at every input.

    .. math:: \mathrm{cov}\big(f_i(x), f_j(x')\big) = B_{ij}\, k_x(x, x'),\qquad B = W W^\top + \mathrm{diag}(v)

    Args:
        data_covar_module: the kernel over inputs, ``k_x``.
        num_tasks: t.
        rank: the rank r of ``W`` (``1 ≤ r ≤ t``).
        task_covar_prior: prior on ``B``.
        batch_shape: (keyword) batch of independent kernels.

    Shapes:
        ``x1 (*batch, n, d)``, ``x2 (*batch, m, d)`` → lazy ``(*batch, n t, m t)`` (rows ``(point, task)``, task
        fastest); ``diag=True`` → ``(*batch, n t)``.

    Example:
        >>> import torch, torchgp
        >>> k = torchgp.kernels.MultitaskKernel(torchgp.kernels.RBFKernel(), num_tasks=2, rank=1)
        >>> tuple(k(torch.rand(5, 1)).shape)
        (10, 10)
    """

    def __init__(self, data_covar_module: Kernel, num_tasks: int, rank: int = 1, task_covar_prior=None, **kwargs):
        if not isinstance(num_tasks, int) or num_tasks < 1:
            raise InputError(f"MultitaskKernel: num_tasks must be a positive integer; got {num_tasks!r}.")
        if not isinstance(rank, int) or not 1 <= rank <= num_tasks:
            raise InputError(
                f"MultitaskKernel: rank must be an integer in [1, num_tasks = {num_tasks}]; got {rank!r}. "
                "The task covariance B = W Wᵀ + diag(v) has W of shape (num_tasks, rank)."
            )
        super().__init__(**kwargs)
        self.task_covar_module = IndexKernel(
            num_tasks=num_tasks, batch_shape=self.batch_shape, rank=rank, prior=task_covar_prior
        )
        self.data_covar_module = data_covar_module
        self.num_tasks = num_tasks

    def num_outputs_per_input(self, x1, x2) -> int:
        return self.num_tasks

    def output_shape(self, x1, x2, last_dim_is_batch: bool = False, **params) -> torch.Size:
        shape = self.data_covar_module.output_shape(x1, x2, last_dim_is_batch, **params)
        batch = broadcast_shapes(shape[:-2], self.batch_shape)
        return torch.Size([*batch, shape[-2] * self.num_tasks, shape[-1] * self.num_tasks])

    def _select(self, x):
        return x if self.active_dims is None else x.index_select(-1, self.active_dims)

    def forward(self, x1, x2, diag: bool = False, last_dim_is_batch: bool = False, **params):
        """``K_x(x1, x2) ⊗ B`` as an operator ``(*batch, n t, m t)`` (or its diagonal ``(*batch, n t)``)."""
        if last_dim_is_batch:
            raise InputError("MultitaskKernel does not support last_dim_is_batch.")
        B = self.task_covar_module.covar_matrix
        if diag:
            kx = self.data_covar_module(x1, x2, diag=True, **params)
            return kron_vectors([kx, B.diagonal(dim1=-2, dim2=-1)], broadcast_shapes(kx.shape[:-1], B.shape[:-2]))
        return KroneckerProductOperator(self.data_covar_module(x1, x2, **params), DenseOperator(B))

    def _lazy(self, x1, x2, last_dim_is_batch: bool = False, **params):
        return self.forward(self._select(x1), self._select(x2), last_dim_is_batch=last_dim_is_batch, **params)

    def evaluate_block(self, x1, x2, diag: bool = False, last_dim_is_batch: bool = False, **params):
        """Dense ``K_x ⊗ B`` ``(*batch, n t, m t)`` (or the diagonal ``(*batch, n t)``), differentiable."""
        out = self.forward(self._select(x1), self._select(x2), diag=diag, last_dim_is_batch=last_dim_is_batch,
                           **params)  # fmt: skip
        return out if diag else out.to_dense()


class LCMKernel(Kernel):
    r"""Linear model of coregionalisation: a sum of ICM kernels, ``Σ_q K_q ⊗ B_q``.

    Args:
        base_kernels: the kernels ``k_q`` over inputs (one ICM term each).
        num_tasks: t.
        rank: rank of each ``B_q`` (one int, or a list with one per base kernel).
        task_covar_prior: prior on each ``B_q``.

    Shapes:
        as :class:`MultitaskKernel`: ``(*batch, n t, m t)``.
    """

    def __init__(self, base_kernels, num_tasks: int, rank: int = 1, task_covar_prior=None):
        base_kernels = list(base_kernels)
        if not base_kernels:
            raise InputError("LCMKernel needs at least one base kernel.")
        ranks = list(rank) if isinstance(rank, (list, tuple)) else [rank] * len(base_kernels)
        if len(ranks) != len(base_kernels):
            raise InputError(
                f"LCMKernel: {len(ranks)} ranks for {len(base_kernels)} base kernels; give one per kernel."
            )
        super().__init__()
        self.covar_module_list = torch.nn.ModuleList(
            [
                MultitaskKernel(k, num_tasks=num_tasks, rank=r, task_covar_prior=task_covar_prior)
                for k, r in zip(base_kernels, ranks)
            ]
        )
        self.num_tasks = num_tasks

    def num_outputs_per_input(self, x1, x2) -> int:
        return self.num_tasks

    def output_shape(self, x1, x2, last_dim_is_batch: bool = False, **params) -> torch.Size:
        return self.covar_module_list[0].output_shape(x1, x2, last_dim_is_batch, **params)

    def forward(self, x1, x2, diag: bool = False, last_dim_is_batch: bool = False, **params):
        """``Σ_q K_q ⊗ B_q``: one Kronecker product if there is one term, else their sum."""
        terms = [k.forward(x1, x2, diag=diag, last_dim_is_batch=last_dim_is_batch, **params)
                 for k in self.covar_module_list]  # fmt: skip
        if diag:
            return sum(terms[1:], terms[0])
        return terms[0] if len(terms) == 1 else SumOperator(*terms)

    def _lazy(self, x1, x2, last_dim_is_batch: bool = False, **params):
        return self.forward(x1, x2, last_dim_is_batch=last_dim_is_batch, **params)

    def evaluate_block(self, x1, x2, diag: bool = False, last_dim_is_batch: bool = False, **params):
        out = self.forward(x1, x2, diag=diag, last_dim_is_batch=last_dim_is_batch, **params)
        return out if diag else out.to_dense()
