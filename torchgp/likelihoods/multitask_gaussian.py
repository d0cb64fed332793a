r"""Gaussian likelihoods of several outputs per point.

* :class:`MultitaskGaussianLikelihood`: ``y_i = f(x_i) + ε_i``, ``ε_i ~ N(0, Σ_t)`` for each point, with
  ``Σ_t = diag(σ_t²) + σ² I`` (``rank=0``) or ``B Bᵀ + σ² I`` (``rank=r``, ``B (t, r)``). The marginal adds
  ``I_n ⊗ Σ_t`` (interleaved order; ``Σ_t ⊗ I_n`` task-major) to the covariance and keeps it Kronecker-structured,
  so ``K_x ⊗ K_t + I ⊗ Σ_t`` is solved exactly by per-factor eigendecompositions
  (:mod:`torchgp.linalg.kronecker_solve`).
* :class:`HadamardGaussianLikelihood`: one observation per row, with the row's task index choosing its noise
  variance (the Hadamard / IndexKernel form of multitask GPs).
"""

from __future__ import annotations

import math

import torch

from torchgp._shapes import broadcast_shapes
from torchgp.constraints import GreaterThan
from torchgp.distributions import MultivariateNormal
from torchgp.distributions.multitask_multivariate_normal import MultitaskMultivariateNormal, unflatten_tasks
from torchgp.errors import InputError, ModelTypeError, ShapeError
from torchgp.likelihoods.gaussian import _GaussianLikelihoodBase
from torchgp.likelihoods.noise_models import HomoskedasticNoise
from torchgp.linalg.operators import (
    ConstantDiagOperator,
    DenseOperator,
    DiagOperator,
    KroneckerProductOperator,
)

__all__ = ["_MultitaskGaussianLikelihoodBase", "MultitaskGaussianLikelihood", "HadamardGaussianLikelihood"]


def _check_rank(rank: int, num_tasks: int, who: str) -> None:
    if not isinstance(num_tasks, int) or num_tasks < 1:
        raise InputError(f"{who}: num_tasks must be a positive integer; got {num_tasks!r}.")
    if not isinstance(rank, int) or rank < 0 or rank > num_tasks:
        raise InputError(
            f"{who}: rank must be an integer in [0, num_tasks = {num_tasks}] (0: a diagonal task noise); got {rank!r}."
        )


def _eye(n: int, like: torch.Tensor, batch=()) -> ConstantDiagOperator:
    return ConstantDiagOperator(torch.ones(*batch, 1, dtype=like.dtype, device=like.device), n)


class _MultitaskGaussianLikelihoodBase(_GaussianLikelihoodBase):
    r"""Multitask Gaussian likelihood around a per-point noise model: point ``i`` has noise ``d_i C`` over the tasks.

    ``d = noise_covar(X)`` ``(*batch, n)``; ``C = I`` (``rank=0``) or a learned correlation matrix of rank ``rank``
    (unit diagonal, from ``task_noise_corr``). Subclasses override :meth:`_shaped_noise_covar`.

    Args:
        num_tasks: t.
        noise_covar: a noise model returning ``(*batch, n)`` variances.
        rank: 0, or the rank of the task correlation.
        task_correlation_prior: prior on the correlation matrix (``rank > 0`` only).
        batch_shape: batch of independent likelihoods.
    """

    _multi_output = True

    def __init__(
        self, num_tasks: int, noise_covar, rank: int = 0, task_correlation_prior=None, batch_shape=torch.Size()
    ):
        _check_rank(rank, num_tasks, type(self).__name__)
        super().__init__(noise_covar=noise_covar, batch_shape=batch_shape)
        self.num_tasks, self.rank = num_tasks, rank
        if rank > 0:
            tril = torch.tril_indices(num_tasks, rank)
            self.register_buffer("tidcs", tril[:, 1:])  # entry (0, 0) of the factor is fixed to 1
            self.task_noise_corr = torch.nn.Parameter(torch.randn(*self.batch_shape, self.tidcs.shape[-1]))
            if task_correlation_prior is not None:
                self.register_prior(
                    "MultitaskErrorCorrelationPrior", task_correlation_prior, lambda m: m._eval_corr_matrix()
                )
        elif task_correlation_prior is not None:
            raise InputError("task_correlation_prior needs rank > 0 (a rank-0 task noise has no correlations).")

    @property
    def _diagonal_task_noise(self) -> bool:
        """Whether each point's noise over the tasks is diagonal (independent tasks)."""
        return self.rank == 0

    def _eval_corr_matrix(self) -> torch.Tensor:
        """The task correlation ``C = F Fᵀ`` (rows of ``F`` normalised to unit length), ``(*batch, t, t)``."""
        corr = self.task_noise_corr
        F = torch.zeros(*corr.shape[:-1], self.num_tasks, self.rank, dtype=corr.dtype, device=corr.device)
        F[..., torch.arange(self.rank), torch.arange(self.rank)] = 1.0
        F[..., self.tidcs[0], self.tidcs[1]] = corr  # the free entries below the fixed (0, 0)
        F = F / F.norm(dim=-1, keepdim=True)
        return F @ F.mT

    def _check_tasks(self, t: int) -> None:
        if t != self.num_tasks:
            raise ShapeError(
                f"{type(self).__name__} was built with num_tasks={self.num_tasks} but the outputs have {t} tasks. "
                f"Build it with num_tasks={t}, or pass targets of shape (n, {self.num_tasks})."
            )

    def _shaped_noise_covar(
        self, shape: torch.Size, add_noise: bool = True, interleaved: bool = True, *params, **kwargs
    ):
        """The noise covariance ``(*batch, nt, nt)`` (Kronecker-structured) for outputs ``shape = (*batch, n, t)``."""
        n, t = shape[-2:]
        self._check_tasks(t)
        d = self.noise_covar(*params, shape=torch.Size([*shape[:-2], n]), **kwargs)  # (*batch, n)
        C = _eye(t, d) if self.rank == 0 else DenseOperator(self._eval_corr_matrix())
        point = DiagOperator(d)
        return KroneckerProductOperator(point, C) if interleaved else KroneckerProductOperator(C, point)

    def marginal(self, function_dist, *params, **kwargs) -> MultitaskMultivariateNormal:
        r"""``N(μ, K + noise)`` with the noise kept structured (a Kronecker product, or a diagonal).

        Shapes: ``function_dist`` ``(*batch, n, t)`` → the same.
        """
        if not isinstance(function_dist, MultitaskMultivariateNormal):
            raise ModelTypeError(
                f"{type(self).__name__} takes a MultitaskMultivariateNormal (event shape (n, t)); got "
                f"{type(function_dist).__name__}. For one output per point use GaussianLikelihood, or "
                "HadamardGaussianLikelihood with task indices."
            )
        mean, covar = function_dist.mean, function_dist.lazy_covariance_matrix
        interleaved = function_dist._interleaved
        noise = self._shaped_noise_covar(mean.shape, True, interleaved, *params, **kwargs)
        if isinstance(covar, KroneckerProductOperator) or not _is_diagonal(noise):
            covar = covar + noise
        else:  # e.g. independent (block-diagonal) tasks plus a diagonal noise: the blocks stay blocks
            covar = covar.add_diagonal(noise.diagonal())
        return MultitaskMultivariateNormal(mean, covar, interleaved=interleaved)

    def _noise_diag(self, shape, *params, **kwargs) -> torch.Tensor:
        """Per-entry noise variances ``(*batch, n, t)``."""
        noise = self._shaped_noise_covar(shape, True, True, *params, **kwargs)
        n, t = shape[-2:]
        return unflatten_tasks(noise.diagonal(), n, t, True)

    def forward(self, function_samples: torch.Tensor, *params, **kwargs):
        """``p(y | f)`` for ``f (*samples, *batch, n, t)``: independent points, tasks correlated if rank > 0."""
        shape = function_samples.shape
        if self._diagonal_task_noise:
            var = self._noise_diag(shape, *params, **kwargs)
            return torch.distributions.Independent(torch.distributions.Normal(function_samples, var.sqrt()), 1)
        Sigma = self._point_noise_covar(shape, *params, **kwargs)  # (*batch, n, t, t)
        return torch.distributions.MultivariateNormal(function_samples, covariance_matrix=Sigma)

    def _point_noise_covar(self, shape, *params, **kwargs) -> torch.Tensor:
        """Each point's ``t × t`` noise covariance ``(*batch, n, t, t)``."""
        noise = self._shaped_noise_covar(shape, True, True, *params, **kwargs)
        d, C = noise.factors
        return d.diagonal()[..., None, None] * C.to_dense().unsqueeze(-3)

    def expected_log_prob(self, target: torch.Tensor, input, *params, **kwargs) -> torch.Tensor:
        r"""``E_q[log p(y_i | f_i)]`` per point, ``(*batch, n)`` (summed over the tasks).

        .. math:: \log N(y_i; m_i, \Sigma_i) - \tfrac12 \mathrm{tr}(\Sigma_i^{-1} S_i)

        with ``S_i`` the variational marginal covariance over the tasks at point ``i`` (its diagonal if rank 0).
        """
        mean = input.mean
        self._check_tasks(mean.shape[-1])
        if self._diagonal_task_noise:
            noise = self._noise_diag(mean.shape, *params, **kwargs)
            var = input.variance
            per = -0.5 * ((target - mean).pow(2) + var) / noise - 0.5 * torch.log(2 * math.pi * noise)
            return per.sum(-1)
        Sigma = self._point_noise_covar(mean.shape, *params, **kwargs)
        S = input.to_data_independent_dist(jitter_val=0.0).covariance_matrix  # (*batch, n, t, t)
        L = torch.linalg.cholesky(Sigma)
        logp = torch.distributions.MultivariateNormal(mean, scale_tril=L).log_prob(target)
        return logp - 0.5 * torch.cholesky_solve(S, L).diagonal(dim1=-2, dim2=-1).sum(-1)

    def log_marginal(self, observations, function_dist, *params, **kwargs) -> torch.Tensor:
        """``Σ_tasks log N(y_ia; μ_ia, σ²_ia)`` per point under the marginal's per-entry variances, ``(*batch, n)``.

        As GPyTorch (the predictive log-likelihood's term): the entries' marginals, without correlations.
        """
        marg = self.marginal(function_dist, *params, **kwargs)
        return torch.distributions.Normal(marg.mean, marg.stddev).log_prob(observations).sum(-1)


def _is_diagonal(op) -> bool:
    return isinstance(op, DiagOperator) or (
        isinstance(op, KroneckerProductOperator) and all(isinstance(f, DiagOperator) for f in op.factors)
    )


class MultitaskGaussianLikelihood(_MultitaskGaussianLikelihoodBase):
    r"""Homoskedastic multitask noise ``Σ_t`` (the same for every point), learned.

    .. math:: \Sigma_t = \mathrm{diag}(\sigma_1^2, \dots, \sigma_t^2) + \sigma^2 I \ (\text{rank } 0),\qquad
              \Sigma_t = B B^\top + \sigma^2 I \ (\text{rank } r,\ B \in \mathbb R^{t\times r})

    Args:
        num_tasks: t.
        rank: 0 (per-task variances ``task_noises``) or r ≤ t (a full task noise ``task_noise_covar = B Bᵀ``).
        batch_shape: batch of independent likelihoods.
        task_prior: prior on ``B Bᵀ + σ² I`` (rank > 0 only).
        noise_prior: prior on ``noise`` and ``task_noises``.
        noise_constraint: constraint on ``noise`` and ``task_noises`` (default ``GreaterThan(1e-4)``).
        has_global_noise: include the shared ``σ² I``.
        has_task_noise: include the task noise (``diag(σ_t²)`` or ``B Bᵀ``).

    Example:
        >>> import torchgp
        >>> lik = torchgp.likelihoods.MultitaskGaussianLikelihood(num_tasks=3)
        >>> tuple(lik.task_noises.shape), tuple(lik.noise.shape)
        ((3,), (1,))
    """

    def __init__(
        self,
        num_tasks: int,
        rank: int = 0,
        batch_shape: torch.Size = torch.Size(),
        task_prior=None,
        noise_prior=None,
        noise_constraint=None,
        has_global_noise: bool = True,
        has_task_noise: bool = True,
    ):
        _check_rank(rank, num_tasks, "MultitaskGaussianLikelihood")
        if not (has_global_noise or has_task_noise):
            raise InputError(
                "MultitaskGaussianLikelihood needs a noise term: set has_global_noise=True or has_task_noise=True."
            )
        if task_prior is not None and (rank == 0 or not has_task_noise):
            raise InputError("task_prior needs rank > 0 and has_task_noise=True (it is a prior on B Bᵀ + σ² I).")
        _GaussianLikelihoodBase.__init__(self, noise_covar=None, batch_shape=batch_shape)
        self.num_tasks, self.rank = num_tasks, rank
        self.has_global_noise, self.has_task_noise = has_global_noise, has_task_noise
        batch = self.batch_shape
        if has_task_noise:
            if rank == 0:
                c = GreaterThan(1e-4) if noise_constraint is None else noise_constraint
                self.register_constrained("task_noises", c.transform(torch.zeros(*batch, num_tasks)), c, noise_prior)
            else:
                self.task_noise_covar_factor = torch.nn.Parameter(torch.randn(*batch, num_tasks, rank))
                if task_prior is not None:
                    self.register_prior("MultitaskErrorCovariancePrior", task_prior, lambda m: m._eval_covar_matrix())
        if has_global_noise:
            c = GreaterThan(1e-4) if noise_constraint is None else noise_constraint
            self.register_constrained("noise", c.transform(torch.zeros(*batch, 1)), c, noise_prior)

    @property
    def _diagonal_task_noise(self) -> bool:
        return not (self.has_task_noise and self.rank > 0)

    @property
    def task_noise_covar(self) -> torch.Tensor:
        """``B Bᵀ`` ``(*batch, t, t)`` (rank > 0)."""
        if not hasattr(self, "task_noise_covar_factor"):
            raise AttributeError("task_noise_covar exists only for rank > 0 with has_task_noise=True.")
        B = self.task_noise_covar_factor
        return B @ B.mT

    @task_noise_covar.setter
    def task_noise_covar(self, value: torch.Tensor) -> None:
        if not hasattr(self, "task_noise_covar_factor"):
            raise AttributeError("task_noise_covar exists only for rank > 0 with has_task_noise=True.")
        value = torch.as_tensor(value, dtype=self.task_noise_covar_factor.dtype)
        evals, evecs = torch.linalg.eigh(value)  # best rank-r root: the r leading eigenpairs
        top = evals[..., -self.rank :].clamp_min(0).sqrt()
        with torch.no_grad():
            self.task_noise_covar_factor.copy_(evecs[..., -self.rank :] * top.unsqueeze(-2))

    def _eval_covar_matrix(self) -> torch.Tensor:
        """``Σ_t`` ``(*batch, t, t)``: the whole task noise covariance of one point."""
        ref = next(self.parameters())
        eye = torch.eye(self.num_tasks, dtype=ref.dtype, device=ref.device)
        out = torch.zeros(*self.batch_shape, self.num_tasks, self.num_tasks, dtype=ref.dtype, device=ref.device)
        if self.has_task_noise:
            out = out + (self.task_noise_covar if self.rank > 0 else torch.diag_embed(self.task_noises))
        if self.has_global_noise:
            out = out + self.noise.unsqueeze(-1) * eye
        return out

    def _shaped_noise_covar(
        self, shape: torch.Size, add_noise: bool = True, interleaved: bool = True, *params, **kwargs
    ):
        """``I_n ⊗ Σ_t`` (interleaved) or ``Σ_t ⊗ I_n``, ``(*batch, nt, nt)``, for outputs ``(*batch, n, t)``."""
        n, t = shape[-2:]
        self._check_tasks(t)
        glob = self.has_global_noise and add_noise
        if self.has_task_noise and self.rank > 0:
            Sigma = self.task_noise_covar
            if glob:
                Sigma = Sigma + self.noise.unsqueeze(-1) * torch.eye(t, dtype=Sigma.dtype, device=Sigma.device)
            task = DenseOperator(Sigma)
        elif self.has_task_noise:
            task = DiagOperator(self.task_noises + self.noise if glob else self.task_noises)
        else:
            task = ConstantDiagOperator(self.noise, t)
        eye = _eye(n, task.diagonal())
        return KroneckerProductOperator(eye, task) if interleaved else KroneckerProductOperator(task, eye)

    def _point_noise_covar(self, shape, *params, **kwargs) -> torch.Tensor:
        n = shape[-2]
        Sigma = self._eval_covar_matrix()
        return Sigma.unsqueeze(-3).expand(*Sigma.shape[:-2], n, *Sigma.shape[-2:])


class HadamardGaussianLikelihood(_GaussianLikelihoodBase):
    r"""Task-wise noise, one observation per row: ``y_j = f(x_j, i_j) + ε_j``, ``ε_j ~ N(0, σ²_{i_j})``.

    The likelihood is called with the task indices (or the full inputs and ``task_feature_index``):
    ``likelihood(model(X, I), I)``; the exact MLL passes the model's training inputs.

    Args:
        num_tasks: t.
        noise_prior: prior on the t variances ``noise``.
        noise_constraint: their constraint (default ``GreaterThan(1e-4)``).
        batch_shape: batch of independent likelihoods.
        task_feature_index: the column of the inputs holding the task index, when full inputs are passed.

    Shapes:
        task indices ``(*batch, n, 1)`` or ``(*batch, n)`` integers in ``[0, t)`` → noise ``(*batch, n)``.
    """

    def __init__(self, num_tasks: int, noise_prior=None, noise_constraint=None, batch_shape=torch.Size(),
                 task_feature_index: int | None = None, **kwargs):  # fmt: skip
        _check_rank(0, num_tasks, "HadamardGaussianLikelihood")
        noise = HomoskedasticNoise(noise_prior, noise_constraint, batch_shape, num_tasks=num_tasks)
        super().__init__(noise_covar=noise, batch_shape=batch_shape)
        self.num_tasks = num_tasks
        self.task_feature_index = task_feature_index

    @property
    def noise(self) -> torch.Tensor:
        """The t task variances ``(*batch, t)``."""
        return self.noise_covar.noise

    @noise.setter
    def noise(self, value) -> None:
        self.noise_covar.noise = value

    @property
    def raw_noise(self) -> torch.Tensor:
        return self.noise_covar.raw_noise

    def task_indices(self, *params) -> torch.Tensor:
        """The long task index of each row, ``(*batch, n)``, from the likelihood's arguments."""
        tensors = [p for p in params if torch.is_tensor(p)]
        if params and not torch.is_tensor(params[0]) and params[0] is not None:
            tensors = [p for p in params[0] if torch.is_tensor(p)]
        if not tensors:
            raise InputError(
                "HadamardGaussianLikelihood needs the task indices: call likelihood(output, task_indices), "
                "likelihood(output, X, task_indices), or pass the full inputs with task_feature_index set."
            )
        # the full inputs carry the task column; with separate inputs (X, I) the task indices come last
        idx = tensors[0] if self.task_feature_index is not None else tensors[-1]
        if idx.dim() >= 2 and idx.shape[-1] > 1:
            if self.task_feature_index is None:
                raise ShapeError(
                    f"HadamardGaussianLikelihood got inputs with {idx.shape[-1]} columns; pass the task indices "
                    "(n, 1), or build it with task_feature_index = the task column."
                )
            idx = idx[..., self.task_feature_index]
        elif idx.dim() >= 2:
            idx = idx[..., 0]
        return check_task_indices(idx, self.num_tasks)

    def _noise(self, mean: torch.Tensor, *params, **kwargs) -> torch.Tensor:
        idx = self.task_indices(*params)
        if idx.shape[-1] != mean.shape[-1]:
            raise ShapeError(f"HadamardGaussianLikelihood: {idx.shape[-1]} task indices for {mean.shape[-1]} outputs.")
        var = self.noise_covar.noise  # (*batch, t)
        batch = broadcast_shapes(var.shape[:-1], idx.shape[:-1])
        return torch.gather(var.expand(*batch, var.shape[-1]), -1, idx.expand(*batch, idx.shape[-1]))

    def marginal(self, function_dist: MultivariateNormal, *params, **kwargs) -> MultivariateNormal:
        """``N(μ, K + diag(σ²_{i_j}))``, ``(*batch, n)``."""
        return super().marginal(function_dist, *params, **kwargs)


def check_task_indices(idx: torch.Tensor, num_tasks: int) -> torch.Tensor:
    """Task indices as a long tensor, checked to be integers in ``[0, num_tasks)``."""
    if idx.is_floating_point():
        if not bool(torch.all(idx == idx.round())):
            bad = idx[idx != idx.round()].flatten()[:5].tolist()
            raise InputError(f"Task indices must be integers; got non-integer values such as {bad}.")
    elif idx.dtype == torch.bool or idx.is_complex():
        raise InputError(f"Task indices must be an integer tensor; got {idx.dtype}.")
    long = idx.long()
    if long.numel() and (int(long.min()) < 0 or int(long.max()) >= num_tasks):
        raise InputError(
            f"Task indices must lie in [0, {num_tasks}) (num_tasks = {num_tasks}); got values from "
            f"{int(long.min())} to {int(long.max())}."
        )
    return long
