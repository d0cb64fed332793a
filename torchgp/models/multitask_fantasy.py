r"""Fantasy updates of a Kronecker multitask posterior: ``q`` new inputs, every task observed, without refactorising.

The cached posterior holds ``A = K_1 ⊗ K_2 + S_1 ⊗ S_2`` (``nt`` rows) through its eigendecompositions
(:class:`~torchgp.linalg.kronecker_solve.KroneckerEig`). New inputs add ``qt`` rows with cross-covariance ``B``
(``nt × qt``, Kronecker: the points factor sliced old × new) and block ``A_qq`` (noise included). With
``C = A⁻¹ B`` (``qt`` Kronecker solves, ``O(qt · nt (n + t))``) and the Schur complement
``S = A_qq − Bᵀ C = L_S L_Sᵀ`` (``O(nt (qt)²)`` plus a ``qt × qt`` Cholesky), the block inverse
(Golub & Van Loan 2013, §3.2.11 and §4.2.9) gives

.. math::
    A_{\mathrm{full}}^{-1}\begin{pmatrix}u\\ v\end{pmatrix}
        = \begin{pmatrix}A^{-1}u - C x_2\\ x_2\end{pmatrix},\quad x_2 = S^{-1}(v - C^\top u),

    \Sigma_* = \big[K_{**} - K_{*x} A^{-1} K_{x*}\big] - R R^\top,\qquad R = (K_{*x} C - K_{*q}) L_S^{-\top},

the bracket being the Kronecker posterior covariance of the old data (never formed). Nothing of size
``(n + q) t`` squared is formed and ``K_x`` is not decomposed again; a fantasy batch of targets shares the factor.

Independent outputs (block-interleaved or block-diagonal covariance, one ``n × n`` Cholesky factor per task) are
updated task by task with :func:`~torchgp.models.fantasy.cholesky_append` (``O(n² q)`` each),
:func:`blocks_fantasy_posterior`.
"""

from __future__ import annotations

import torch

from torchgp._shapes import broadcast_shapes
from torchgp.distributions.multitask_multivariate_normal import (
    MultitaskMultivariateNormal,
    flatten_tasks,
    unflatten_tasks,
)
from torchgp.errors import ModelTypeError
from torchgp.linalg.cholesky import psd_safe_cholesky
from torchgp.linalg.operators import DenseOperator, KroneckerProductOperator, Operator
from torchgp.linalg.operators.kronecker import kron_apply
from torchgp.models.fantasy import cholesky_append
from torchgp.models.multitask_posterior import KroneckerPosteriorCovariance, MultitaskExactPosterior, _task_blocks_type

__all__ = ["KroneckerFantasyPosterior", "DowndatedCovariance", "blocks_fantasy_posterior"]


def _dense(x) -> torch.Tensor:
    return x.to_dense() if isinstance(x, Operator) else x


class DowndatedCovariance(Operator):
    """``Σ − R Rᵀ`` for a covariance operator ``Σ`` ``(*batch, N, N)`` and ``R (*batch, N, k)``, never formed."""

    def __init__(self, base: Operator, R: torch.Tensor):
        self.base, self.R = base, R
        batch = broadcast_shapes(base.shape[:-2], R.shape[:-2])
        self.shape = torch.Size([*batch, *base.shape[-2:]])
        self.dtype, self.device = R.dtype, R.device

    def diagonal(self, offset: int = 0, dim1: int = -2, dim2: int = -1):
        if (offset, dim1 % self.dim(), dim2 % self.dim()) != (0, self.dim() - 2, self.dim() - 1):
            return self.to_dense().diagonal(offset=offset, dim1=dim1, dim2=dim2)
        return self.base.diagonal() - self.R.square().sum(-1)

    def task_blocks(self, n: int, t: int, interleaved: bool) -> torch.Tensor:
        """Each point's ``t × t`` block ``(*batch, n, t, t)``."""
        k = self.R.shape[-1]
        Rb = (
            self.R.reshape(*self.R.shape[:-2], n, t, k)
            if interleaved
            else self.R.unflatten(-2, (t, n)).transpose(-3, -2)
        )
        return self.base.task_blocks(n, t, interleaved) - Rb @ Rb.mT

    def _dense(self):
        return self.base.to_dense() - self.R @ self.R.mT

    def _matmul(self, rhs):
        return self.base.matmul(rhs) - self.R @ (self.R.mT @ rhs)

    def _tensors(self):
        return [*self.base._tensors(), self.R]

    def _map(self, fn):
        return DowndatedCovariance(self.base._map(fn), fn(self.R))


def _kron_apply2(F1, F2, M: torch.Tensor) -> torch.Tensor:
    """``(F_1 ⊗ F_2) M`` for ``M (*b, p q, k)``, ``F_i (*b, ·, ·)`` dense."""
    batch = broadcast_shapes(F1.shape[:-2], F2.shape[:-2])
    sizes_in, sizes_out = [F1.shape[-1], F2.shape[-1]], [F1.shape[-2], F2.shape[-2]]
    return kron_apply([F1.__matmul__, F2.__matmul__], sizes_in, sizes_out, M, batch)


class KroneckerFantasyPosterior(MultitaskExactPosterior):
    """The posterior of a Kronecker multitask model after :meth:`update` with ``q`` new fully observed inputs.

    Built by :meth:`update` from the cached :class:`MultitaskExactPosterior` of kind ``"kronecker"``; predicts
    through the block inverse of the module docstring.
    """

    @classmethod
    def update(cls, post: MultitaskExactPosterior, full, noisy_new, r_new: torch.Tensor) -> KroneckerFantasyPosterior:
        """The updated posterior.

        Args:
            post: the old posterior (kind ``"kronecker"``), ``n`` points.
            full: the prior ``MultitaskMultivariateNormal`` over the ``n + q`` training points.
            noisy_new: the likelihood's marginal over the ``q`` new points alone (its covariance is ``A_qq``).
            r_new: ``(*f, qt)`` residuals ``y − μ`` of the new points, flattened in the model's task order.
        """
        C_op = full.lazy_covariance_matrix
        if not (isinstance(C_op, KroneckerProductOperator) and len(C_op.factors) == 2):
            raise ModelTypeError(
                "A Kronecker multitask fantasy needs the prior's covariance to be a Kronecker product."
            )
        n, t = post.n, post.t
        d = 0 if post.interleaved else 1  # the factor over points
        G = [_dense(f) for f in C_op.factors]
        cross = [G[i][..., :n, n:] if i == d else G[i] for i in range(2)]  # old × new: B = F_1 ⊗ F_2
        B = KroneckerProductOperator(DenseOperator(cross[0]), DenseOperator(cross[1])).to_dense()  # (*b, nt, qt)
        C = post.eig.solve(B)  # A⁻¹ B by the cached eigendecompositions
        A_qq = _dense(noisy_new.lazy_covariance_matrix)
        L_S = psd_safe_cholesky(A_qq - B.mT @ C)  # chol of the Schur complement
        alpha_old = post.alpha.reshape(*post.alpha.shape[:-2], -1)  # A⁻¹ r_old, (*b, nt)
        v = r_new - (B.mT @ alpha_old.unsqueeze(-1)).squeeze(-1)  # v − Cᵀu = v − Bᵀ A⁻¹ u
        x2 = torch.cholesky_solve(v.unsqueeze(-1), L_S).squeeze(-1)  # (*f, qt)
        x1 = alpha_old - (C @ x2.unsqueeze(-1)).squeeze(-1)
        new = object.__new__(cls)
        new.__dict__.update(post.__dict__)
        new.kind = "kronecker_fantasy"
        new.n_old, new.q, new.C, new.L_S, new.x1, new.x2 = n, r_new.shape[-1] // t, C, L_S, x1, x2
        new.n = n + new.q
        return new

    def predict(self, full: MultitaskMultivariateNormal, n_test: int) -> MultitaskMultivariateNormal:
        n, N, t = self.n_old, self.n, self.t
        test_mean = full.mean[..., N:, :]
        C_op = full.lazy_covariance_matrix
        if not (isinstance(C_op, KroneckerProductOperator) and len(C_op.factors) == 2):
            raise ModelTypeError(
                "The multitask model's covariance at new inputs is not the Kronecker product it had at the training "
                f"inputs (got {type(C_op).__name__}); build forward's covariance the same way for any inputs."
            )
        d = 0 if self.interleaved else 1
        G = [_dense(f) for f in C_op.factors]

        def factors(rows, cols):
            return [G[i][..., rows, cols] if i == d else G[i] for i in range(2)]

        old = factors(slice(N, None), slice(None, n))
        new = factors(slice(N, None), slice(n, N))
        test = factors(slice(N, None), slice(N, None))
        mean = _kron_apply2(*old, self.x1.unsqueeze(-1)) + _kron_apply2(*new, self.x2.unsqueeze(-1))
        mean = flatten_tasks(test_mean, self.interleaved) + mean.squeeze(-1)
        eig = self.eig
        base = KroneckerPosteriorCovariance(*test, old[0] @ eig.P1, old[1] @ eig.P2, eig.W)
        K_sq = KroneckerProductOperator(DenseOperator(new[0]), DenseOperator(new[1])).to_dense()
        M = _kron_apply2(*old, self.C) - K_sq  # K_*x C − K_*q, (*b, n* t, qt)
        R = torch.linalg.solve_triangular(self.L_S, M.mT, upper=False).mT
        cov = DowndatedCovariance(base, R)
        return MultitaskMultivariateNormal(
            unflatten_tasks(mean, n_test, t, self.interleaved), cov, interleaved=self.interleaved
        )

    def detach(self) -> KroneckerFantasyPosterior:
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        for name in ("alpha", "C", "L_S", "x1", "x2"):
            setattr(new, name, getattr(self, name).detach())
        return new


def blocks_fantasy_posterior(post: MultitaskExactPosterior, full, noisy_new, residuals: torch.Tensor):
    """The posterior of independent outputs (kind ``"blocks"``) after ``q`` new inputs, every task observed.

    Args:
        post: the old posterior, factors ``L (*b, t, n, n)``.
        full: the prior over the ``n + q`` training points (independent tasks: a block-interleaved covariance, or
            block-diagonal if task-major, blocks ``(*b, t, n+q, n+q)``).
        noisy_new: the likelihood's marginal over the new points alone (the same layout).
        residuals: ``(*f, n + q, t)``, the old and new targets minus ``full``'s mean.

    Returns:
        The updated :class:`MultitaskExactPosterior`, or None if the covariances are not the old posterior's blocks.
    """
    C, A_qq = full.lazy_covariance_matrix, noisy_new.lazy_covariance_matrix
    kind = post.blocks_type
    if not (_task_blocks_type(C, post.interleaved) is kind and _task_blocks_type(A_qq, post.interleaved) is kind):
        return None
    n = post.n
    K_xq = _dense(C.base[..., :n, n:])  # (*b, t, n, q)
    L_new = cholesky_append(post.blocks_L, K_xq, _dense(A_qq.base))  # one block-Cholesky update per task
    new = object.__new__(MultitaskExactPosterior)
    new.__dict__.update(post.__dict__)
    new.n, new.blocks_L = n + K_xq.shape[-1], L_new
    new.alpha = torch.cholesky_solve(residuals.mT.unsqueeze(-1), L_new)  # R&W Alg. 2.1 line 3, (*f, *b, t, n+q, 1)
    return new
