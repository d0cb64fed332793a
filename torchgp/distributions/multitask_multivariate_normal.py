r"""``MultitaskMultivariateNormal``: a Gaussian over ``(*batch, n, t)`` values (n points, t tasks).

The covariance is ``(*batch, nt, nt)``. Its row order is **interleaved** (``interleaved=True``, the
default: row ``i t + a`` is point ``i``, task ``a``, so ``K_x ⊗ K_t``) or task-major (``interleaved=False``:
row ``a n + i``, so ``K_t ⊗ K_x``). The mean and every result are ``(*batch, n, t)`` either way.

``log_prob`` of a covariance ``K_1 ⊗ K_2 + S_1 ⊗ S_2`` (a multitask kernel plus a multitask Gaussian
likelihood's noise) runs through :mod:`torchgp.linalg.kronecker_solve`: exact, never forming the
``nt × nt`` matrix; any other covariance goes through :func:`torchgp.linalg.inv_quad_logdet`. Independent tasks
(:meth:`MultitaskMultivariateNormal.from_batch_mvn`, interleaved as GPyTorch's) have a
:class:`~torchgp.linalg.operators.BlockInterleavedOperator` covariance, solved and sampled one ``n × n`` block per task.
"""

from __future__ import annotations

import functools
import math

import torch
from torch.distributions import Normal

from torchgp import settings
from torchgp._shapes import broadcast_shapes
from torchgp.distributions.multivariate_normal import MultivariateNormal
from torchgp.errors import ShapeError
from torchgp.linalg.cholesky import psd_safe_cholesky
from torchgp.linalg.inv_quad_logdet import inv_quad_logdet
from torchgp.linalg.kronecker_solve import kronecker_inv_quad_logdet, kronecker_sum
from torchgp.linalg.operators import (
    AddedDiagOperator,
    BlockDiagOperator,
    BlockInterleavedOperator,
    ConstantDiagOperator,
    DenseOperator,
    DiagOperator,
    KroneckerProductOperator,
    as_operator,
)
from torchgp.linalg.operators.structured import SumOperator


def flatten_tasks(values: torch.Tensor, interleaved: bool) -> torch.Tensor:
    """``(*batch, n, t) → (*batch, nt)`` in the covariance's row order."""
    return values.reshape(*values.shape[:-2], -1) if interleaved else values.mT.reshape(*values.shape[:-2], -1)


def unflatten_tasks(flat: torch.Tensor, n: int, t: int, interleaved: bool) -> torch.Tensor:
    """``(*batch, nt) → (*batch, n, t)``, the inverse of :func:`flatten_tasks`."""
    if interleaved:
        return flat.reshape(*flat.shape[:-1], n, t)
    return flat.reshape(*flat.shape[:-1], t, n).mT


def task_blocks(cov, n: int, t: int, interleaved: bool) -> torch.Tensor:
    """Each point's ``t × t`` block of a covariance ``(*batch, nt, nt)``: ``(*batch, n, t, t)``.

    Kronecker products (``K_x ⊗ B`` gives ``K_x[i, i] B``), diagonals, independent tasks (block-diagonal, or
    block-interleaved in interleaved order: each point's block is diagonal), sums of these and operators with a
    ``task_blocks`` method are read without forming the ``nt × nt`` matrix; any other covariance is made dense.
    """
    if hasattr(cov, "task_blocks"):
        return cov.task_blocks(n, t, interleaved)
    if isinstance(cov, KroneckerProductOperator) and len(cov.factors) == 2:
        point, task = cov.factors if interleaved else cov.factors[::-1]
        if point.shape[-1] == n and task.shape[-1] == t:
            return point.diagonal()[..., :, None, None] * task.to_dense().unsqueeze(-3)
    if (
        isinstance(cov, DiagOperator)
        or (isinstance(cov, BlockDiagOperator) and not interleaved)
        or (isinstance(cov, BlockInterleavedOperator) and interleaved)
    ):
        return torch.diag_embed(unflatten_tasks(cov.diagonal(), n, t, interleaved))
    if isinstance(cov, AddedDiagOperator):
        base = task_blocks(cov.base, n, t, interleaved)
        d = unflatten_tasks(cov.diag.expand(*cov.diag.shape[:-1], n * t), n, t, interleaved)
        return base + torch.diag_embed(d)
    if isinstance(cov, SumOperator):
        parts = [task_blocks(op, n, t, interleaved) for op in cov.operators]
        return functools.reduce(torch.add, parts)
    C = cov.to_dense()
    points = torch.arange(n, device=C.device)
    tasks = torch.arange(t, device=C.device)
    rows = points[:, None] * t + tasks[None, :] if interleaved else tasks[None, :] * n + points[:, None]
    return C[..., rows[:, :, None], rows[:, None, :]]


class MultitaskMultivariateNormal(MultivariateNormal):
    """Gaussian over ``n`` points × ``t`` tasks (GPyTorch's interface).

    Args:
        mean: ``(*batch, n, t)``; a ``(*batch, 1, t)`` or ``(*batch, n, 1)`` mean is expanded to the covariance.
        covariance_matrix: ``(*batch, nt, nt)`` tensor or operator, rows in the order ``interleaved`` says.
        interleaved: True: rows ``(point, task)`` with the task fastest; False: ``(task, point)``.

    Shapes:
        ``batch_shape = *batch``, ``event_shape = (n, t)``; ``mean``, ``variance``, samples ``(*batch, n, t)``.

    Example:
        >>> import torch
        >>> d = MultitaskMultivariateNormal(torch.zeros(3, 2), torch.eye(6))
        >>> d.event_shape, d.num_tasks
        (torch.Size([3, 2]), 2)
    """

    _is_multitask = True

    def __init__(self, mean: torch.Tensor, covariance_matrix, validate_args: bool = False, interleaved: bool = True):
        if not torch.is_tensor(mean) or mean.dim() < 2:
            raise ShapeError(
                "MultitaskMultivariateNormal: mean must be a tensor of shape (*batch, n, t); got "
                f"{tuple(mean.shape) if torch.is_tensor(mean) else type(mean).__name__}."
            )
        cov = as_operator(covariance_matrix)
        N = cov.shape[-1]
        n, t = mean.shape[-2:]
        if n * t != N:
            if n == 1 and N % t == 0:
                n = N // t
            elif t == 1 and N % n == 0:
                t = N // n
            else:
                raise ShapeError(
                    f"MultitaskMultivariateNormal: mean {tuple(mean.shape)} "
                    f"(n × t = {mean.shape[-2] * mean.shape[-1]}) "
                    f"does not match the covariance {tuple(cov.shape)}; it must be (*batch, n t, n t)."
                )
        batch = broadcast_shapes(mean.shape[:-2], cov.shape[:-2])
        mean = mean.expand(*batch, n, t)
        self._interleaved = bool(interleaved)
        self._output_shape = mean.shape
        super().__init__(flatten_tasks(mean, self._interleaved), cov, validate_args=validate_args)
        self._event_shape = torch.Size([n, t])

    # ------------------------------------------------------------------ shape and moments
    @property
    def num_tasks(self) -> int:
        return self._output_shape[-1]

    @property
    def base_sample_shape(self) -> torch.Size:
        return self.event_shape

    def _unflat(self, flat: torch.Tensor) -> torch.Tensor:
        n, t = self._output_shape[-2:]
        return unflatten_tasks(flat, n, t, self._interleaved)

    @property
    def mean(self) -> torch.Tensor:
        """``(*batch, n, t)``."""
        return self._unflat(self._mean)

    @property
    def loc(self) -> torch.Tensor:
        """The flat mean ``(*batch, nt)`` in the covariance's order (``MultivariateNormal.loc``)."""
        return self._mean

    @property
    def variance(self) -> torch.Tensor:
        """Marginal variances ``(*batch, n, t)``, clamped below at ``settings.min_variance``."""
        return self._unflat(self._flat_variance())

    def _flat_variance(self) -> torch.Tensor:
        if settings.skip_posterior_variances.on():
            return torch.zeros_like(self._mean)
        var = self._covar.diagonal().expand(*self.batch_shape, self._mean.shape[-1])
        return var.clamp_min(settings.min_variance.value(var.dtype))

    def confidence_region(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mean − 2σ, mean + 2σ)``, each ``(*batch, n, t)``."""
        std2 = 2 * self.stddev
        return self.mean - std2, self.mean + std2

    # ------------------------------------------------------------------ samples and densities
    @property
    def scale_tril(self) -> torch.Tensor:
        """Lower Cholesky factor of the covariance, ``(*batch, nt, nt)``; independent tasks (a block-diagonal or
        block-interleaved covariance) are factorised block by block, ``O(t n³)`` (the factor keeps their layout)."""
        if self._chol is None and isinstance(self._covar, (BlockDiagOperator, BlockInterleavedOperator)):
            L = psd_safe_cholesky(self._covar.base.to_dense())  # (*batch, t, n, n)
            L = type(self._covar)(DenseOperator(L)).to_dense()
            self._chol = L.expand(*self.batch_shape, *L.shape[-2:])
        return super().scale_tril

    def rsample(self, sample_shape=torch.Size(), base_samples: torch.Tensor | None = None) -> torch.Tensor:
        """Reparameterised samples ``(*sample_shape, *batch, n, t)``; ``base_samples (..., *batch, n, t)``."""
        if base_samples is not None:
            if tuple(base_samples.shape[-len(self._output_shape) :]) != tuple(self._output_shape):
                raise ShapeError(
                    f"base_samples must end in the mean's shape {tuple(self._output_shape)}; got "
                    f"{tuple(base_samples.shape)}."
                )
            # read in memory order whatever the row order, as GPyTorch does (same samples from the same base)
            base_samples = base_samples.reshape(*base_samples.shape[:-2], -1)
            sample_shape = base_samples.shape[: base_samples.dim() - self._mean.dim()]
        flat = MultivariateNormal.rsample(self, sample_shape, base_samples)
        return self._unflat(flat)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        r"""``log N(vec(value); vec(mean), K)``, ``(*batch)``, for ``value (*batch, n, t)``.

        .. math:: -\tfrac12 \big[r^\top K^{-1} r + \log|K| + nt\log 2\pi\big],\quad r = \mathrm{vec}(y - \mu)
        """
        if value.dim() < 2 or tuple(value.shape[-2:]) != tuple(self.event_shape):
            raise ShapeError(
                f"log_prob: value must have shape (*batch, {self.event_shape[0]}, {self.event_shape[1]}) "
                f"(n points × t tasks); got {tuple(value.shape)}."
            )
        N = self.event_shape.numel()
        diff = flatten_tasks(value, self._interleaved) - self._mean
        parts = kronecker_sum(self._covar)
        if parts is not None:
            quad, logdet = kronecker_inv_quad_logdet(parts, diff.unsqueeze(-1))
            if settings.skip_logdet_forward.on():  # as inv_quad_logdet does: no value, the same gradient
                logdet = logdet - logdet.detach()
        else:
            quad, logdet = inv_quad_logdet(self._covar, diff.unsqueeze(-1))
        return -0.5 * (quad + logdet + N * math.log(2 * math.pi))

    def entropy(self) -> torch.Tensor:
        N = self.event_shape.numel()
        parts = kronecker_sum(self._covar)
        _, logdet = (kronecker_inv_quad_logdet if parts is not None else inv_quad_logdet)(
            parts if parts is not None else self._covar, None
        )
        return 0.5 * (N * (1 + math.log(2 * math.pi)) + logdet)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_batch_mvn(cls, batch_mvn: MultivariateNormal, task_dim: int = -1) -> MultitaskMultivariateNormal:
        """Independent tasks from a batch of MVNs: batch dimension ``task_dim`` becomes the task dimension.

        Shapes: ``batch_mvn`` with batch ``(*batch, t)`` (at ``task_dim``) and event ``(n,)`` →
        batch ``*batch``, event ``(n, t)``. As GPyTorch's, the result is interleaved (row ``i t + a`` is point ``i``,
        task ``a``): the covariance is a :class:`~torchgp.linalg.operators.BlockInterleavedOperator` over the MVN's
        ``t`` covariances, solved, factorised and sampled block by block.
        """
        nb = len(batch_mvn.batch_shape)
        d = task_dim if task_dim >= 0 else nb + task_dim
        if nb == 0 or not 0 <= d < nb:
            raise ShapeError(
                f"from_batch_mvn: task_dim={task_dim} is not a batch dimension of the MVN (batch shape "
                f"{tuple(batch_mvn.batch_shape)}); build the MVN with a task batch dimension (batch_shape=[t])."
            )
        n = batch_mvn.event_shape[0]
        mean = batch_mvn.mean.movedim(d, -1)  # (*batch, n, t)
        cov = batch_mvn.lazy_covariance_matrix.expand(*batch_mvn.batch_shape, n, n)
        blocks = BlockInterleavedOperator(cov, block_dim=d - nb - 2)
        return cls(mean, blocks, interleaved=True)

    @classmethod
    def from_independent_mvns(cls, mvns) -> MultitaskMultivariateNormal:
        """Independent tasks from a list of ``t ≥ 2`` MVNs of equal event shape ``(n,)`` → event ``(n, t)``."""
        mvns = list(mvns)
        if len(mvns) < 2:
            raise ShapeError("from_independent_mvns needs at least 2 MultivariateNormals (one per task).")
        if any(isinstance(m, MultitaskMultivariateNormal) for m in mvns):
            raise ShapeError("from_independent_mvns takes single-task MultivariateNormals, not multitask ones.")
        if any(m.event_shape != mvns[0].event_shape for m in mvns):
            raise ShapeError(
                "from_independent_mvns: all MVNs need the same event shape; got "
                f"{[tuple(m.event_shape) for m in mvns]}."
            )
        batch = broadcast_shapes(*(m.batch_shape for m in mvns))
        n = mvns[0].event_shape[0]
        mean = torch.stack([m.mean.expand(*batch, n) for m in mvns], -1)
        cov = torch.stack([m.lazy_covariance_matrix.to_dense().expand(*batch, n, n) for m in mvns], -3)
        return cls(mean, BlockDiagOperator(DenseOperator(cov)), interleaved=False)

    @classmethod
    def from_repeated_mvn(cls, mvn: MultivariateNormal, num_tasks: int) -> MultitaskMultivariateNormal:
        """``num_tasks`` independent copies of one MVN ``(*batch, n)`` → event ``(n, num_tasks)``.

        As GPyTorch's, the result is interleaved (row ``i t + a`` is point ``i``, task ``a``); its covariance
        ``K ⊗ I_t`` is kept as a Kronecker product (solved per factor).
        """
        mean = mvn.mean.unsqueeze(-1).expand(*mvn.mean.shape, num_tasks)
        eye = ConstantDiagOperator(torch.ones(1, dtype=mvn.mean.dtype, device=mvn.mean.device), num_tasks)
        cov = KroneckerProductOperator(mvn.lazy_covariance_matrix, eye)
        return cls(mean, cov, interleaved=True)

    # ------------------------------------------------------------------ views
    def to_data_independent_dist(self, jitter_val: float = 1e-4) -> MultivariateNormal:
        """Per-point MVNs over the tasks: batch ``(*batch, n)``, event ``(t,)``; cross-point covariances dropped.

        Each point's ``t × t`` block of the covariance is kept (plus ``jitter_val`` on its diagonal).
        """
        n, t = self._output_shape[-2:]
        blocks = task_blocks(self._covar, n, t, self._interleaved)  # (*batch, n, t, t)
        blocks = blocks + jitter_val * torch.eye(t, dtype=blocks.dtype, device=blocks.device)
        return MultivariateNormal(self.mean, DenseOperator(blocks))

    def to_independent_normal(self) -> Normal:
        """Independent marginals ``Normal(mean, stddev)``, ``(*batch, n, t)``."""
        return Normal(self.mean, self.stddev)

    def __add__(self, other):
        if isinstance(other, MultitaskMultivariateNormal) and other._interleaved == self._interleaved:
            return type(self)(self.mean + other.mean, self._covar + other._covar, interleaved=self._interleaved)
        if isinstance(other, (int, float, torch.Tensor)):
            return type(self)(self.mean + other, self._covar, interleaved=self._interleaved)
        return NotImplemented

    __radd__ = __add__

    def __mul__(self, other):
        if not isinstance(other, (int, float)):
            raise TypeError("MultitaskMultivariateNormal can only be multiplied by a Python scalar.")
        return type(self)(self.mean * other, self._covar * float(other) ** 2, interleaved=self._interleaved)

    __rmul__ = __mul__

    def add_jitter(self, noise: float = 1e-4) -> MultitaskMultivariateNormal:
        return type(self)(self.mean, self._covar.add_jitter(noise), interleaved=self._interleaved)

    def expand(self, batch_shape, _instance=None) -> MultitaskMultivariateNormal:
        batch_shape = torch.Size(batch_shape)
        N = self._covar.shape[-1]
        return type(self)(
            self.mean.expand(*batch_shape, *self._output_shape[-2:]),
            self._covar.expand(*batch_shape, N, N),
            interleaved=self._interleaved,
        )

    def __getitem__(self, idx):
        """Batch indices give a multitask MVN; ``[..., i]`` with ``i`` an int task gives that task's MVN
        ``(*batch, n)``;
        ``[..., j, :]`` (or ``[j]`` after all batch indices) with ``j`` an int point gives the MVN over the
        tasks at that point."""
        if not isinstance(idx, tuple):
            idx = (idx,)
        nb = len(self.batch_shape)
        if Ellipsis in idx:
            k = idx.index(Ellipsis)
            idx = idx[:k] + (slice(None),) * (nb + 2 - len(idx) + 1) + idx[k + 1 :]
        if len(idx) <= nb:
            idx = idx + (slice(None),) * (nb - len(idx))
            N = self._covar.shape[-1]
            cov = self._covar.expand(*self.batch_shape, N, N)[idx]
            return type(self)(self.mean[idx + (slice(None), slice(None))], cov, interleaved=self._interleaved)
        if len(idx) == nb + 1:  # a point index and no task index: all tasks at that point (trailing ":" implied)
            idx = idx + (slice(None),)
        if len(idx) != nb + 2:
            raise IndexError(
                f"MultitaskMultivariateNormal indices: up to {nb} batch indices, or {nb} + 2 (batch, point, task)."
            )
        batch_idx, pt, task = idx[:nb], idx[nb], idx[nb + 1]
        n, t = self._output_shape[-2:]
        grid = torch.arange(n * t, device=self._mean.device)
        grid = grid.reshape(n, t) if self._interleaved else grid.reshape(t, n).mT
        rows = grid[pt, task]
        mean = self.mean[(*batch_idx, pt, task)]
        if rows.dim() == 0:
            rows = rows.reshape(1)
        N = self._covar.shape[-1]
        C = self._covar.expand(*self.batch_shape, N, N)[batch_idx] if batch_idx else self._covar
        flat = rows.reshape(-1)
        sub = C[..., flat[:, None], flat[None, :]]  # entries only (independent tasks: from their blocks)
        if rows.dim() == 2:
            return type(self)(mean, DenseOperator(sub), interleaved=True)
        if mean.dim() == len(sub.shape) - 2:
            mean = mean.unsqueeze(-1)
        return MultivariateNormal(mean, DenseOperator(sub))

    def __repr__(self) -> str:
        n, t = self.event_shape
        return f"MultitaskMultivariateNormal(batch_shape={tuple(self.batch_shape)}, n={n}, t={t})"
