r"""``IndependentMultitaskVariationalStrategy``: ``t`` independent SVGPs (a batch of them) seen as ``t`` tasks.

The base strategy's output has a task batch dimension (``batch_shape=[t]`` on the model's mean, kernel,
inducing points and variational distribution); this strategy reads it as a
:class:`~torchgp.distributions.MultitaskMultivariateNormal` ``(*batch, n, t)`` (block diagonal over the tasks), or,
with ``task_indices``, picks one task per input.
"""

from __future__ import annotations

import torch

from torchgp.distributions import MultivariateNormal
from torchgp.distributions.multitask_multivariate_normal import MultitaskMultivariateNormal
from torchgp.errors import ShapeError
from torchgp.likelihoods.multitask_gaussian import check_task_indices
from torchgp.linalg.operators import DenseOperator, DiagOperator
from torchgp.module import Module

__all__ = ["IndependentMultitaskVariationalStrategy", "select_tasks"]


def select_tasks(dist: MultivariateNormal, task_indices: torch.Tensor, task_dim: int, num_tasks: int):
    """One task per input from a batch of per-task MVNs: ``q(f_{i_j}(x_j))``, a ``MultivariateNormal`` ``(*batch, n)``.

    Args:
        dist: batch ``(*batch, t)`` (task dimension ``task_dim``), event ``(n,)``.
        task_indices: ``(*batch, n)`` or ``(n,)`` integers in ``[0, t)``.
    """
    nb = len(dist.batch_shape)
    d = task_dim % nb
    idx = check_task_indices(task_indices, num_tasks)
    n = dist.event_shape[0]
    if idx.shape[-1] != n:
        raise ShapeError(f"task_indices has {idx.shape[-1]} entries for {n} inputs; give one task index per input.")
    mask = torch.nn.functional.one_hot(idx, num_tasks).to(dist.mean.dtype)  # (*batch', n, t)
    mask = mask.movedim(-1, d - nb - 1)  # the task axis where dist has it: (..., t, ..., n)
    mean = (dist.mean * mask).sum(d)
    cov = dist.lazy_covariance_matrix
    if isinstance(cov, DiagOperator):
        return MultivariateNormal(mean, DiagOperator((cov.diagonal() * mask).sum(d)))
    C = cov.to_dense() * mask.unsqueeze(-1) * mask.unsqueeze(-2)  # cross-task entries are zero: independent
    return MultivariateNormal(mean, DenseOperator(C.sum(d)))


class _OverBaseStrategy(Module):
    """A strategy that wraps a batch of independent GPs (``base_variational_strategy``) along one batch dimension.

    It exposes the base strategy's ``variational_distribution``, ``prior_distribution`` and ``model``, and its KL is
    the base strategy's summed over ``_gp_dim`` (the batch dimension holding the independent GPs).
    """

    _gp_dim: int

    @property
    def variational_distribution(self):
        return self.base_variational_strategy.variational_distribution

    @property
    def prior_distribution(self):
        return self.base_variational_strategy.prior_distribution

    @property
    def model(self):
        return self.base_variational_strategy.model

    def kl_divergence(self) -> torch.Tensor:
        """``Σ_g KL(q(u_g) ‖ p(u_g))`` over the independent GPs, ``(*batch)``."""
        return self.base_variational_strategy.kl_divergence().sum(self._gp_dim)


class IndependentMultitaskVariationalStrategy(_OverBaseStrategy):
    """Independent outputs from a batch of variational GPs.

    Args:
        base_variational_strategy: a strategy whose output has batch ``(*batch, t)`` (task at ``task_dim``).
        num_tasks: t.
        task_dim: the batch dimension of the base output that indexes the tasks (default -1).

    Shapes:
        ``model(x (*batch, n, d))`` → ``MultitaskMultivariateNormal`` ``(*batch, n, t)``;
        ``model(x, task_indices=i)`` with ``i (n,)`` → ``MultivariateNormal`` ``(*batch, n)``.
    """

    def __init__(self, base_variational_strategy, num_tasks: int, task_dim: int = -1):
        super().__init__()
        self.base_variational_strategy = base_variational_strategy
        self.num_tasks = num_tasks
        self.task_dim = task_dim

    @property
    def _gp_dim(self) -> int:
        return self.task_dim  # one GP per task

    def __call__(self, x, task_indices=None, prior: bool = False, **kwargs):
        dist = self.base_variational_strategy(x, prior=prior, **kwargs)
        nb = len(dist.batch_shape)
        if nb == 0 or not -nb <= self.task_dim < nb:
            # no task dimension: every task shares the one GP
            return MultitaskMultivariateNormal.from_repeated_mvn(dist, num_tasks=self.num_tasks)
        if dist.batch_shape[self.task_dim] != self.num_tasks:
            raise ShapeError(
                f"IndependentMultitaskVariationalStrategy(num_tasks={self.num_tasks}): the base strategy's output has "
                f"batch shape {tuple(dist.batch_shape)}, {dist.batch_shape[self.task_dim]} at task_dim="
                f"{self.task_dim}. Build the model's mean, kernel and variational distribution with "
                f"batch_shape=torch.Size([{self.num_tasks}])."
            )
        if task_indices is not None:
            return select_tasks(dist, task_indices, self.task_dim, self.num_tasks)
        return MultitaskMultivariateNormal.from_batch_mvn(dist, task_dim=self.task_dim)
