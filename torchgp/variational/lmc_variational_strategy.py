r"""``LMCVariationalStrategy``: ``t`` outputs as linear mixtures of ``L`` latent variational GPs.

.. math:: f_a(x) = \sum_{l=1}^{L} A_{la}\, g_l(x),\qquad g_l \sim q(g_l)\ \text{independent}

so ``E f(x) = Aᵀ E g(x)`` and ``cov(f(x), f(x')) = Σ_l cov(g_l(x), g_l(x'))\, a_l a_lᵀ`` (the linear model of
coregionalisation; Álvarez et al. 2012, §4.2), ``a_l = A[l]``. The KL term is the sum over the latents.
"""

from __future__ import annotations

import torch

from torchgp._shapes import broadcast_shapes
from torchgp.distributions import MultivariateNormal
from torchgp.distributions.multitask_multivariate_normal import MultitaskMultivariateNormal
from torchgp.errors import InputError, ShapeError
from torchgp.likelihoods.multitask_gaussian import check_task_indices
from torchgp.linalg.operators import DenseOperator, Operator
from torchgp.variational.independent_multitask_variational_strategy import _OverBaseStrategy

__all__ = ["LMCVariationalStrategy"]


class _LMCCovariance(Operator):
    """``Σ_l K_l ⊗ a_l a_lᵀ`` (interleaved, ``(*batch, n t, n t)``) from latent covariances ``K (*batch, L, n, n)``.

    Its diagonal ``Σ_l diag(K_l) ⊗ a_l²`` needs only the latent variances.
    """

    def __init__(self, latent_cov: Operator, A: torch.Tensor):
        self.latent_cov, self.A = latent_cov, A  # A (*batch, L, t)
        n, t = latent_cov.shape[-1], A.shape[-1]
        batch = broadcast_shapes(latent_cov.shape[:-3], A.shape[:-2])
        self.shape = torch.Size([*batch, n * t, n * t])
        self.dtype, self.device = A.dtype, A.device

    def diagonal(self, offset: int = 0, dim1: int = -2, dim2: int = -1):
        if (offset, dim1 % self.dim(), dim2 % self.dim()) != (0, self.dim() - 2, self.dim() - 1):
            return self.to_dense().diagonal(offset=offset, dim1=dim1, dim2=dim2)
        var = self.latent_cov.diagonal()  # (*batch, L, n)
        d = (var.unsqueeze(-1) * self.A.pow(2).unsqueeze(-2)).sum(-3)  # (*batch, n, t)
        return d.reshape(*d.shape[:-2], -1)

    def task_blocks(self, n: int, t: int, interleaved: bool = True) -> torch.Tensor:
        """Each point's ``t × t`` block ``Σ_l K_l[i, i] a_l a_lᵀ``, ``(*batch, n, t, t)`` (interleaved rows)."""
        var = self.latent_cov.diagonal()  # (*batch, L, n)
        return torch.einsum("...li,...la,...lb->...iab", var, self.A, self.A)

    def _dense(self):
        K = self.latent_cov.to_dense()  # (*batch, L, n, n)
        M = self.A.unsqueeze(-1) * self.A.unsqueeze(-2)  # (*batch, L, t, t)
        out = (K[..., :, None, :, None] * M[..., None, :, None, :]).sum(-5)  # (*batch, n, t, n, t)
        return out.reshape(*out.shape[:-4], self.shape[-2], self.shape[-1])

    def _tensors(self):
        return [*self.latent_cov._tensors(), self.A]


class LMCVariationalStrategy(_OverBaseStrategy):
    """Outputs mixed from ``num_latents`` latent variational GPs with learned coefficients ``lmc_coefficients``.

    Args:
        base_variational_strategy: a strategy whose output has a latent batch dimension of size ``num_latents``
            (at ``latent_dim``).
        num_tasks: t.
        num_latents: L.
        latent_dim: the batch dimension of the base output that indexes the latents (negative; default -1).
        jitter_val: added to the diagonal of the output covariance (default ``settings.variational_cholesky_jitter``,
            as GPyTorch); 0 for none.

    Attributes:
        lmc_coefficients: ``A`` ``(*batch, L, t)``.

    Shapes:
        ``model(x (*batch, n, d))`` → ``MultitaskMultivariateNormal`` ``(*batch, n, t)``;
        ``model(x, task_indices=i)`` with ``i (n,)`` → ``MultivariateNormal`` ``(*batch, n)`` of ``f_{i_j}(x_j)``.
    """

    def __init__(self, base_variational_strategy, num_tasks: int, num_latents: int = 1, latent_dim: int = -1,
                 jitter_val: float | None = None):  # fmt: skip
        super().__init__()
        if latent_dim >= 0:
            raise InputError(
                f"LMCVariationalStrategy: latent_dim must be negative (a batch dimension); got {latent_dim}."
            )
        self.base_variational_strategy = base_variational_strategy
        self.num_tasks, self.num_latents, self.latent_dim = num_tasks, num_latents, latent_dim
        batch = list(getattr(base_variational_strategy.variational_distribution, "batch_shape", torch.Size()))
        if len(batch) < -latent_dim or batch[latent_dim] != num_latents:
            raise ShapeError(
                f"LMCVariationalStrategy(num_latents={num_latents}): the variational distribution has batch shape "
                f"{tuple(batch)}; build it (and the inducing points, mean and kernel) with batch_shape=[{num_latents}] "
                f"at latent_dim={latent_dim}."
            )
        del batch[latent_dim]
        self.lmc_coefficients = torch.nn.Parameter(torch.randn(*batch, num_latents, num_tasks))
        self.jitter_val = jitter_val

    @property
    def _gp_dim(self) -> int:
        return self.latent_dim  # one GP per latent function

    def _jitter(self, dtype) -> float:
        if self.jitter_val is not None:
            return self.jitter_val
        from torchgp import settings

        return settings.variational_cholesky_jitter.value(dtype)

    def __call__(self, x, task_indices=None, prior: bool = False, **kwargs):
        latent = self.base_variational_strategy(x, prior=prior, **kwargs)  # batch (*batch, L), event (n,)
        nb = len(latent.batch_shape)
        d = nb + self.latent_dim  # the latent axis of the batch
        mean = latent.mean.movedim(d, -2)  # (*batch, L, n)
        cov = latent.lazy_covariance_matrix
        n = latent.event_shape[0]
        cov = cov.expand(*latent.batch_shape, n, n)
        if d != nb - 1:
            cov = DenseOperator(cov.to_dense().movedim(d, -3))
        A = self.lmc_coefficients  # (*batch, L, t)
        eps = self._jitter(mean.dtype)
        if task_indices is None:
            f_mean = (mean.unsqueeze(-1) * A.unsqueeze(-2)).sum(-3)  # (*batch, n, t): Aᵀ g(x)
            f_cov = _LMCCovariance(cov, A)
            if eps:
                f_cov = f_cov.add_jitter(eps)
            return MultitaskMultivariateNormal(f_mean, f_cov)
        idx = check_task_indices(task_indices, self.num_tasks)
        if idx.shape[-1] != n:
            raise ShapeError(f"task_indices has {idx.shape[-1]} entries for {n} inputs; give one per input.")
        a = A[..., idx]  # (*batch, L, n): the coefficient of each input's task
        f_mean = (mean * a).sum(-2)
        C = (cov.to_dense() * a.unsqueeze(-1) * a.unsqueeze(-2)).sum(-3)
        out = DenseOperator(C)
        return MultivariateNormal(f_mean, out.add_jitter(eps) if eps else out)
