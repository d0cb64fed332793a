r"""The exact GP posterior as an explicit object (R&W 2006, Algorithm 2.1).

Built once from the training data and the current hyperparameters:

* ``L = chol(K + σ²I)`` (Cholesky path) or the noisy operator itself (iterative path),
* ``α = (K + σ²I)⁻¹ (y − μ(X))``,

and then, for test inputs ``X*``:

* mean ``μ(X*) + K*ₓ α``                                   (Alg. 2.1 line 4)
* covariance ``K** − K*ₓ (K + σ²I)⁻¹ Kₓ*`` = ``K** − vᵀv``, ``v = L⁻¹Kₓ*``  (lines 5–6)

The covariance is returned lazily (:class:`PosteriorCovariance`): its diagonal costs O(n²t)
and never forms the t × t matrix.
"""

from __future__ import annotations

import torch

from torchgp import settings
from torchgp._shapes import broadcast_shapes
from torchgp.linalg.cholesky import psd_safe_cholesky
from torchgp.linalg.inv_quad_logdet import solve
from torchgp.linalg.operators import Operator, as_operator


class ExactPosterior:
    """Cached factorisation of the training covariance; predicts at any test inputs.

    Args:
        train_x: ``(*batch, n, d)``; train_y: ``(*batch, n)``.
        prior_mean: ``μ(X)`` ``(*batch, n)``; noisy_covar: ``K + σ²I`` as an operator ``(*batch, n, n)``.
    """

    def __init__(self, train_x, train_y, prior_mean, noisy_covar):
        op = as_operator(noisy_covar)
        self.train_x = train_x
        self.n = op.shape[-1]
        r = (train_y - prior_mean).unsqueeze(-1)
        self.use_cholesky = self.n <= settings.max_cholesky_size.value()
        if self.use_cholesky:
            K = op.to_dense()
            self.L = psd_safe_cholesky(K)  # R&W Alg. 2.1 line 2
            self.alpha = torch.cholesky_solve(r.expand(*K.shape[:-1], 1), self.L)  # line 3
            self.op = None
        else:
            self.L = None
            self.op = op
            with settings.cg_tolerance(settings.eval_cg_tolerance.value()):
                self.alpha = solve(op, r.expand(*op.shape[:-1], 1))

    def detach(self) -> ExactPosterior:
        new = object.__new__(ExactPosterior)
        new.__dict__.update(self.__dict__)
        new.alpha = self.alpha.detach()
        new.L = None if self.L is None else self.L.detach()
        return new

    def half_solve(self, K_xs: torch.Tensor) -> torch.Tensor:
        """``L⁻¹ Kₓ*`` (Cholesky path) — ``(*batch, n, t)``."""
        return torch.linalg.solve_triangular(self.L, K_xs, upper=False)

    def predict(self, test_mean: torch.Tensor, K_sx: torch.Tensor, test_covar) -> tuple[torch.Tensor, Operator]:
        """Predictive mean ``(*batch, t)`` and lazy covariance ``(*batch, t, t)``.

        Args:
            test_mean: ``μ(X*)`` ``(*batch, t)``.
            K_sx: ``K(X*, X)`` ``(*batch, t, n)`` (dense).
            test_covar: ``K(X*, X*)`` operator ``(*batch, t, t)``.
        """
        mean = test_mean + (K_sx @ self.alpha).squeeze(-1)  # R&W Alg. 2.1 line 4
        return mean, PosteriorCovariance(self, K_sx, as_operator(test_covar))


class PosteriorCovariance(Operator):
    """``K** − K*ₓ (K + σ²I)⁻¹ Kₓ*``, ``(*batch, t, t)``; rows of NaN test inputs stay in their rows."""

    def __init__(self, posterior: ExactPosterior, K_sx: torch.Tensor, test_covar: Operator):
        self.posterior, self.K_sx, self.test_covar = posterior, K_sx, test_covar
        batch = broadcast_shapes(K_sx.shape[:-2], test_covar.shape[:-2])
        t = K_sx.shape[-2]
        self.shape = torch.Size([*batch, t, t])
        self.dtype, self.device = K_sx.dtype, K_sx.device
        self._v = None

    def _solved(self) -> torch.Tensor:
        """``v = L⁻¹Kₓ*`` (Cholesky) or ``w = (K+σ²I)⁻¹Kₓ*`` (iterative), ``(*batch, n, t)``."""
        if self._v is None:
            p = self.posterior
            if p.use_cholesky:
                self._v = _batched_columns(p.half_solve, p.L.shape[:-2], self.K_sx.mT)
            else:
                with settings.cg_tolerance(settings.eval_cg_tolerance.value()):
                    self._v = _batched_columns(lambda r: solve(p.op, r), p.op.shape[:-2], self.K_sx.mT)
        return self._v

    def _reduction(self) -> torch.Tensor:
        """``K*ₓ (K+σ²I)⁻¹ Kₓ*``, ``(*batch, t, t)``."""
        v = self._solved()
        return v.mT @ v if self.posterior.use_cholesky else self.K_sx @ v

    def _dense(self):
        return self.test_covar.to_dense() - self._reduction()  # R&W Alg. 2.1 line 6

    def diagonal(self):
        v = self._solved()
        explained = v.pow(2).sum(-2) if self.posterior.use_cholesky else (self.K_sx.mT * v).sum(-2)
        return self.test_covar.diagonal() - explained

    def matmul(self, rhs):
        return self.to_dense() @ rhs


def _batched_columns(fn, train_batch: torch.Size, rhs: torch.Tensor) -> torch.Tensor:
    """``fn(rhs)`` for ``rhs (*batch, n, t)`` when ``fn``'s matrix has the smaller batch ``train_batch``.

    Test batches are folded into columns (one solve, no copy of the n × n factor per test batch).
    """
    batch = rhs.shape[:-2]
    if tuple(batch) == tuple(train_batch):
        return fn(rhs)
    out_batch = broadcast_shapes(batch, train_batch)
    k = len(out_batch) - len(train_batch)
    rhs = rhs.expand(*out_batch, *rhs.shape[-2:])
    lead = out_batch[:k]
    n, t = rhs.shape[-2], rhs.shape[-1]
    # (*lead, *train_batch, n, t) → (*train_batch, n, lead·t)
    perm = [*range(k, k + len(train_batch)), k + len(train_batch), *range(k), k + len(train_batch) + 1]
    folded = rhs.permute(*perm).reshape(*train_batch, n, -1)
    out = fn(folded).reshape(*train_batch, n, *lead, t)
    inv = [
        *range(len(train_batch) + 1, len(train_batch) + 1 + k),
        *range(len(train_batch) + 1),
        len(train_batch) + 1 + k,
    ]
    return out.permute(*inv)
