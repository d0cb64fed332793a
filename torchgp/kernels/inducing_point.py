r"""``InducingPointKernel``: the Nyström kernel of SGPR, usable inside an exact GP (Titsias 2009)."""

from __future__ import annotations

import functools

import torch

from torchgp import settings
from torchgp._shapes import broadcast_shapes
from torchgp.distributions import MultivariateNormal
from torchgp.errors import InputError
from torchgp.kernels.kernel import Kernel, as_inputs
from torchgp.linalg import operators
from torchgp.linalg.cholesky import psd_safe_cholesky


def _same(x1: torch.Tensor, x2: torch.Tensor) -> bool:
    """Whether ``k(x1, x2)`` is a prior covariance ``k(X, X)`` (GPyTorch compares values; O(n d))."""
    return x1 is x2 or (x1.shape == x2.shape and torch.equal(x1, x2))


def _per_task_noise(likelihood) -> bool:
    """Whether ``likelihood`` is multitask with entry-wise noises ``(n, t)`` (e.g. ``MultitaskGaussianLikelihood``)."""
    return hasattr(likelihood, "_noise_diag") and hasattr(likelihood, "num_tasks")


@functools.cache
def _MultitaskTraceTerm(base: type) -> type:
    r"""The SGPR trace term under a multitask likelihood (``MultitaskKernel(InducingPointKernel(...))``):
    the data kernel's gap ``k_ii − Q_ii`` over each task's noise, ``−½ Σ_i Σ_j (k_ii − Q_ii) / σ²_ij``
    (GPyTorch's convention for the Kronecker multitask SGPR; the task covariance does not scale the gap)."""

    class MultitaskInducingPointTraceTerm(base):
        def loss(self, *params) -> torch.Tensor:
            gap = (
                self.prior_dist.lazy_covariance_matrix.diagonal()
                - self.variational_dist.lazy_covariance_matrix.diagonal()
            )
            lik = self.likelihood
            noise = lik._noise_diag(torch.Size([*gap.shape, lik.num_tasks]), *params)  # (*batch, n, t)
            return -0.5 * (gap.unsqueeze(-1) / noise).sum((-2, -1))

    return MultitaskInducingPointTraceTerm


class InducingPointKernel(Kernel):
    r"""Low-rank Nyström approximation of a base kernel through m inducing points Z (Titsias 2009).

    .. math::
        k(x, x') \approx Q(x, x') = k_{xZ} K_{ZZ}^{-1} k_{Zx'} = v(x)^\top v(x'),\qquad
        v(x) = L^{-1} k_{Zx},\ L L^\top = K_{ZZ}

    Inside an ``ExactGP`` this gives the collapsed SGPR bound: in train mode ``k(X)`` is the rank-m
    root :math:`V V^\top` (an :math:`O(n m^2)` solve by Woodbury's identity), and each call records
    the trace term of Titsias (2009, eq. 9),
    :math:`-\tfrac1{2\sigma^2}\operatorname{tr}(K_{XX} - Q_{XX})`, as the added loss term
    ``inducing_point_loss_term`` that the exact marginal log likelihood adds. In eval mode, under
    ``settings.sgpr_diagonal_correction`` (on by default, as in GPyTorch), ``k(X, X)`` is
    :math:`Q_{XX} + \operatorname{diag}(\max(0, k_{xx} - Q_{xx}))`: predictions then use the base
    kernel's prior variances.

    Args:
        base_kernel: the kernel to approximate.
        inducing_points: Z, ``(m, d)`` or ``(m,)`` (learned: a parameter).
        likelihood: the Gaussian likelihood whose noise scales the trace term.
        active_dims: columns of the inputs to use.

    Shapes:
        ``x1 (*batch, n, d)``, ``x2 (*batch, p, d)`` → ``(*batch, n, p)``.
    """

    def __init__(self, base_kernel: Kernel, inducing_points: torch.Tensor, likelihood, active_dims=None):
        if not isinstance(base_kernel, Kernel):
            raise TypeError(f"InducingPointKernel needs a torchgp Kernel; got {type(base_kernel).__name__}.")
        super().__init__(active_dims=active_dims)
        self.base_kernel = base_kernel
        self.likelihood = likelihood
        Z = as_inputs(torch.as_tensor(inducing_points), "inducing_points")
        self.register_parameter("inducing_points", torch.nn.Parameter(Z))
        self.register_added_loss_term("inducing_point_loss_term")

    # ------------------------------------------------------------------ the maths
    def _inducing_chol(self) -> torch.Tensor:
        """``L`` with ``L Lᵀ = K_ZZ``, ``(*batch, m, m)`` (jitter escalation as in every Cholesky here)."""
        Z = self.inducing_points
        return psd_safe_cholesky(self.base_kernel.evaluate_block(Z, Z))

    def _root(self, x: torch.Tensor, L: torch.Tensor | None = None) -> torch.Tensor:
        r""":math:`V = k_{xZ} L^{-\top}`, ``(*batch, n, m)``, so that :math:`Q_{xx'} = V V'^\top`."""
        L = self._inducing_chol() if L is None else L
        K_zx = self.base_kernel.evaluate_block(self.inducing_points, x)  # (*batch, m, n)
        batch = broadcast_shapes(L.shape[:-2], K_zx.shape[:-2])
        L = L.expand(*batch, *L.shape[-2:])
        return torch.linalg.solve_triangular(L, K_zx.expand(*batch, *K_zx.shape[-2:]), upper=False).mT

    def _corrected(self) -> bool:
        return not self.training and settings.sgpr_diagonal_correction.on()

    def forward(self, x1, x2, **params):
        L = self._inducing_chol()
        V1 = self._root(x1, L)
        V2 = V1 if x2 is x1 else self._root(x2, L)
        Q = V1 @ V2.mT
        if self._corrected() and _same(x1, x2):
            # eval mode: the prior variances of the base kernel, Q + diag(max(0, k_xx − Q_xx))
            gap = (self.base_kernel.evaluate_block(x1, x1, diag=True) - Q.diagonal(dim1=-2, dim2=-1)).clamp_min(0)
            Q = Q + torch.diag_embed(gap)
        return Q

    def forward_diag(self, x1, x2, **params):
        L = self._inducing_chol()
        V1 = self._root(x1, L)
        V2 = V1 if x2 is x1 else self._root(x2, L)
        q = (V1 * V2).sum(-1)
        if self._corrected() and _same(x1, x2):
            return torch.maximum(q, self.base_kernel.evaluate_block(x1, x1, diag=True).expand_as(q))
        return q

    # ------------------------------------------------------------------ train mode: low rank + loss term
    def _call(self, x1, x2=None, diag: bool = False, last_dim_is_batch: bool = False, **params):
        if not self.training or last_dim_is_batch or params:
            return super()._call(x1, x2, diag=diag, last_dim_is_batch=last_dim_is_batch, **params)
        x1 = as_inputs(x1, "x1")
        if x2 is not None and x2 is not x1:
            x2 = as_inputs(x2, "x2")
            if x2.shape != x1.shape or not torch.equal(x1, x2):
                raise InputError(
                    "InducingPointKernel in train mode evaluates k(X, X) on the training inputs only (it records "
                    "the SGPR trace term for them); call kernel.eval() to evaluate it between different inputs."
                )
        self._check_dims(x1.shape)
        x = x1 if self.active_dims is None else x1.index_select(-1, self.active_dims)
        V = self._root(x)
        root_op = getattr(operators, "LowRankRootOperator", None)
        covar = root_op(V) if root_op is not None else operators.DenseOperator(V @ V.mT)
        k_diag = self.base_kernel.evaluate_block(x, x, diag=True)
        self._record_trace_term(k_diag.expand(V.shape[:-1]), covar)
        if diag:
            return V.square().sum(-1)  # diag Q_XX, (*batch, n)
        return covar if settings.lazily_evaluate_kernels.on() else covar.to_dense()

    def _record_trace_term(self, k_diag: torch.Tensor, q_covar) -> None:
        """Store Titsias' (2009, eq. 9) trace term as ``inducing_point_loss_term``.

        ``k_diag`` is ``diag K_XX`` ``(*batch, n)``, ``q_covar`` the operator ``Q_XX``.
        """
        from torchgp.mlls import InducingPointKernelAddedLossTerm  # defined with the objectives that add it

        diag_op = getattr(operators, "DiagOperator", None)
        zero = torch.zeros_like(k_diag)
        prior_cov = diag_op(k_diag) if diag_op is not None else torch.diag_embed(k_diag)
        cls = _MultitaskTraceTerm(InducingPointKernelAddedLossTerm) if _per_task_noise(self.likelihood) else None
        term = (cls or InducingPointKernelAddedLossTerm)(
            MultivariateNormal(zero, prior_cov), MultivariateNormal(zero, q_covar), self.likelihood
        )
        self.update_added_loss_term("inducing_point_loss_term", term)

    def num_outputs_per_input(self, x1, x2) -> int:
        return self.base_kernel.num_outputs_per_input(x1, x2)
