r"""The inducing-point conditional shared by the variational strategies and SGPR.

Both condition ``f(X)`` on ``u = f(Z)`` through the joint prior over ``[Z; X]``: :func:`_split_prior`
takes its blocks ``μ_z, μ_x, K_zz, K_zx, diag K_xx`` (and ``K_xx`` on demand), and the predictive
covariance ``K_xx - AᵀA + BᵀB`` (Hensman et al. 2015, §3; Titsias 2009, eq. 6) is the operator
:class:`_PredictiveCovariance`, whose diagonal costs ``O(m b)`` without forming ``K_xx``.
"""

from __future__ import annotations

import torch

from torchgp._shapes import broadcast_shapes
from torchgp.distributions.multivariate_normal import MultivariateNormal
from torchgp.linalg.operators import KernelOperator, Operator

__all__ = ["_PredictiveCovariance", "_split_prior", "_add_jitter"]


class _PredictiveCovariance(Operator):
    """``K_xx - AᵀA + BᵀB`` ``(*batch, b, b)`` with ``A, B (*batch, m, b)``; its diagonal costs O(m b)."""

    def __init__(self, kxx_diag: torch.Tensor, kxx_dense, A: torch.Tensor, B: torch.Tensor):
        self.kxx_diag, self.kxx_dense, self.A, self.B = kxx_diag, kxx_dense, A, B
        batch = broadcast_shapes(kxx_diag.shape[:-1], A.shape[:-2], B.shape[:-2])
        b = A.shape[-1]
        self.shape = torch.Size([*batch, b, b])
        self.dtype, self.device = A.dtype, A.device

    def _dense(self):
        return self.kxx_dense() - self.A.mT @ self.A + self.B.mT @ self.B

    def diagonal(self):
        d = self.kxx_diag - self.A.pow(2).sum(-2) + self.B.pow(2).sum(-2)
        return d.expand(self.shape[:-1])


def _split_prior(prior: MultivariateNormal, m: int):
    """From the prior over ``[Z; X]`` get ``μ_z, μ_x, K_zz, K_zx, diag K_xx`` and a closure for dense ``K_xx``.

    A lazy kernel matrix is evaluated block by block (never the ``(m+b)²`` whole); a dense
    covariance (a custom forward) is sliced.
    """
    mean = prior.mean
    mean_z, mean_x = mean[..., :m], mean[..., m:]
    cov = prior.lazy_covariance_matrix
    if isinstance(cov, KernelOperator) and cov.x1 is cov.x2:
        kern, xs, params = cov.kernel, cov.x1, cov.params
        z, x = xs[..., :m, :], xs[..., m:, :]
        K_zz = kern.evaluate_block(z, z, **params)
        K_zx = kern.evaluate_block(z, x, **params)
        kxx_diag = kern.evaluate_block(x, x, diag=True, **params)
        return mean_z, mean_x, K_zz, K_zx, kxx_diag, lambda: kern.evaluate_block(x, x, **params)
    full = cov.to_dense()
    K_xx = full[..., m:, m:]
    return mean_z, mean_x, full[..., :m, :m], full[..., :m, m:], K_xx.diagonal(dim1=-2, dim2=-1), lambda: K_xx


def _add_jitter(kxx_dense, eps: float):
    """A closure for ``K_xx + εI`` from one for ``K_xx`` ``(*batch, b, b)``."""

    def dense():
        K = kxx_dense()
        return K + eps * torch.eye(K.shape[-1], dtype=K.dtype, device=K.device)

    return dense
