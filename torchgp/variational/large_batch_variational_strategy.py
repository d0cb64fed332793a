r"""Whitened SVGP restructured for large minibatches (GPyTorch's ``LargeBatchVariationalStrategy``).

:class:`~torchgp.variational.VariationalStrategy` forms ``A = L⁻¹ K_zx`` and ``L_vᵀ A``, two ``O(m² b)``
products per step. Grouping the ``m × m`` middle term first (``K_zz + εI = L Lᵀ``, ``S_v = L_v L_vᵀ``)

.. math:: M = L^{-\top} (S_v - I) L^{-1},\qquad
          \mu_q(X) = \mu(X) + K_{xz}\,(L^{-\top} m_v),\qquad
          \Sigma_q(X) = K_{xx} + \varepsilon I + K_{xz} M K_{zx}

leaves one ``O(m² b)`` product (``M K_zx``) and ``O(m b)`` for the diagonal
``diag(K_xz M K_zx) = Σ_i K_zx ⊙ (M K_zx)``, whose backward (:class:`QuadFormDiagonal`) is one more
``O(m² b)`` product instead of autograd's two. ``M`` is a difference of nearly equal terms: it is formed in
float64 whatever the model's dtype (fast on data-centre GPUs, slow on consumer GPUs and CPUs, where
:class:`~torchgp.variational.VariationalStrategy` is the better choice); results are cast back.
"""

from __future__ import annotations

import torch

from torchgp._shapes import broadcast_shapes
from torchgp.distributions import MultivariateNormal
from torchgp.linalg.operators import Operator
from torchgp.variational.variational_strategy import VariationalStrategy, _add_jitter


class QuadFormDiagonal(torch.autograd.Function):
    r"""``diag(Rᵀ M R)`` ``(*batch, b)`` for symmetric ``M (*batch, m, m)`` and ``R (*batch, m, b)``.

    Forward ``Σ_i R ⊙ (M R)`` (``O(m² b)``, ``Rᵀ M R`` never formed); backward with ``g (*batch, b)``:
    ``∂/∂M = R diag(g) Rᵀ`` and ``∂/∂R = 2 (M R) diag(g)`` (``M`` symmetric).
    """

    @staticmethod
    def forward(ctx, M, R):
        MR = M @ R
        ctx.save_for_backward(R, MR)
        return (R * MR).sum(-2)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        R, MR = ctx.saved_tensors
        gM = R @ (g.unsqueeze(-1) * R.mT) if ctx.needs_input_grad[0] else None
        gR = 2 * MR * g.unsqueeze(-2) if ctx.needs_input_grad[1] else None
        return gM, gR


class _GroupedCovariance(Operator):
    """``K_xx + εI + K_xz M K_zx`` ``(*batch, b, b)``; its diagonal costs ``O(m² b)`` through QuadFormDiagonal."""

    def __init__(self, kxx_diag: torch.Tensor, kxx_dense, K_zx: torch.Tensor, M: torch.Tensor):
        self.kxx_diag, self.kxx_dense, self.K_zx, self.M = kxx_diag, kxx_dense, K_zx, M
        batch = broadcast_shapes(kxx_diag.shape[:-1], K_zx.shape[:-2], M.shape[:-2])
        b = K_zx.shape[-1]
        self.shape = torch.Size([*batch, b, b])
        self.dtype, self.device = K_zx.dtype, K_zx.device

    def _dense(self):
        R = self.K_zx.to(torch.float64)
        return self.kxx_dense() + (R.mT @ (self.M @ R)).to(self.dtype)

    def diagonal(self, offset: int = 0, dim1: int = -2, dim2: int = -1):
        nd = len(self.shape)
        if offset or {dim1 % nd, dim2 % nd} != {nd - 2, nd - 1}:
            return super().diagonal(offset, dim1, dim2)
        R = self.K_zx.to(torch.float64)
        M = self.M.expand(*broadcast_shapes(self.M.shape[:-2], R.shape[:-2]), *self.M.shape[-2:])
        d = self.kxx_diag + QuadFormDiagonal.apply(M, R.expand(*M.shape[:-2], *R.shape[-2:])).to(self.dtype)
        return d.expand(self.shape[:-1])


class LargeBatchVariationalStrategy(VariationalStrategy):
    r"""Whitened SVGP with the middle term grouped (module equations): fast for large minibatches.

    Same parameters, state_dict and results as :class:`~torchgp.variational.VariationalStrategy` (to
    round-off); only the order of the products differs.

    Args:
        model: the :class:`~torchgp.models.ApproximateGP` whose ``forward`` gives the prior.
        inducing_points: ``Z`` ``(*batch, m, d)``.
        variational_distribution: distribution over the ``m`` whitened values.
        learn_inducing_locations: train ``Z`` (default) or keep it fixed.
        jitter_val: diagonal jitter on ``K_zz`` (default ``settings.variational_cholesky_jitter``).

    Shapes:
        ``strategy(x (*batch, b, d))`` → ``MultivariateNormal`` ``(*batch, b)``.
    """

    def __call__(self, x: torch.Tensor, prior: bool = False, **kwargs) -> MultivariateNormal:
        """``q(f(x))`` ``(*batch, b)`` for inputs ``x (*batch, b, d)``; the prior if ``prior=True``."""
        if prior:
            return self.model.forward(x, **kwargs)
        flag = getattr(self, "updated_strategy", None)
        if flag is not None and not bool(flag):
            self._whiten_loaded_parameters()
        x = self._check_inputs(x)
        self._initialize()
        mean_z, mean_x, K_zz, K_zx, kxx_diag, kxx_dense = self._joint_prior(x, **kwargs)
        eps = self._jitter(K_zz.dtype)
        if kwargs:  # forward's keyword arguments may change the prior: no cache
            L = self._chol_zz(K_zz)
            L_inv = torch.linalg.solve_triangular(
                L, torch.eye(L.shape[-1], dtype=L.dtype, device=L.device), upper=False
            )
            self._cache = None
        else:
            Z_batch = self.inducing_points.shape[:-2]
            _, L, L_inv = self._factor(K_zz, mean_z, for_kl=broadcast_shapes(Z_batch, x.shape[:-2]) == Z_batch)
        dtype = K_zx.dtype
        L_inv = L_inv.to(torch.float64)
        v_mean, v_chol = self._variational_distribution.mean_and_scale_tril()
        v_mean, v_chol = v_mean.to(torch.float64), v_chol.to(torch.float64)
        eye = torch.eye(L_inv.shape[-1], dtype=torch.float64, device=L_inv.device)
        # M = L⁻ᵀ (S_v - I) L⁻¹ and L⁻ᵀ m_v: m × m work only
        M = L_inv.mT @ (v_chol @ v_chol.mT - eye) @ L_inv
        M = (M + M.mT) / 2
        w = (L_inv.mT @ v_mean.unsqueeze(-1)).squeeze(-1)
        mean = mean_x + (K_zx.to(torch.float64).mT @ w.unsqueeze(-1)).squeeze(-1).to(dtype)
        covar = _GroupedCovariance(kxx_diag + eps, _add_jitter(kxx_dense, eps), K_zx, M)
        return MultivariateNormal(mean, covar)
