r"""Whitened SVGP whose whitening goes through contour integral quadrature (Pleiss et al. 2020, §5).

The whitened coordinates use the symmetric square root instead of the Cholesky factor:
``u = μ(Z) + K_zz^{1/2} v``, ``p(v) = N(0, I)``, ``q(v) = N(m_v, S_v)``, ``S_v = L_v L_vᵀ``, and with
``A = K_zz^{-1/2} K_zx`` ``(*batch, m, b)`` computed by CIQ (:func:`torchgp.linalg.minres.contour_integral_quad`)

.. math:: \mu_q(X) = \mu(X) + A^\top m_v,\qquad
          \Sigma_q(X) = K_{xx} + \varepsilon I - A^\top A + (L_v^\top A)^\top (L_v^\top A)

(``ε`` the jitter, on ``K_zz`` and ``K_xx`` as in :class:`~torchgp.variational.VariationalStrategy`). Each
step costs ``O(J m² b)`` for ``J`` msMINRES iterations: no ``O(m³)`` factorisation, which pays for large ``m``
or for inducing points whose ``K_zz`` products are cheap. The KL term is the whitened one and needs no kernel.
The accuracy follows ``settings.num_contour_quadrature`` and ``settings.minres_tolerance``.
"""

from __future__ import annotations

import torch

from torchgp.distributions import MultivariateNormal
from torchgp.linalg.minres import contour_integral_quad
from torchgp.variational.variational_strategy import (
    VariationalStrategy,
    _add_jitter,
    _PredictiveCovariance,
    _VariationalStrategy,
)


class CiqVariationalStrategy(_VariationalStrategy):
    r"""Whitened variational strategy with ``K_zz^{-1/2}`` by contour integral quadrature (GPyTorch's name).

    Best used with :class:`~torchgp.variational.NaturalVariationalDistribution` and natural gradients, as in
    GPyTorch; any variational distribution works.

    Args:
        model: the :class:`~torchgp.models.ApproximateGP` whose ``forward`` gives the prior.
        inducing_points: ``Z`` ``(*batch, m, d)``.
        variational_distribution: distribution over the ``m`` whitened values ``v``.
        learn_inducing_locations: train ``Z`` (default) or keep it fixed.
        jitter_val: diagonal jitter on ``K_zz`` (default ``settings.variational_cholesky_jitter``).

    Shapes:
        ``strategy(x (*batch, b, d))`` → ``MultivariateNormal`` ``(*batch, b)``.

    Example:
        >>> import torch, torchgp
        >>> from torchgp.variational import CholeskyVariationalDistribution, CiqVariationalStrategy
        >>> class Model(torchgp.models.ApproximateGP):
        ...     def __init__(self, Z):
        ...         super().__init__(CiqVariationalStrategy(self, Z, CholeskyVariationalDistribution(Z.shape[0])))
        ...         self.covar_module = torchgp.kernels.RBFKernel()
        ...     def forward(self, x):
        ...         return torchgp.distributions.MultivariateNormal(torch.zeros(x.shape[:-1]), self.covar_module(x))
        >>> Model(torch.rand(10, 1))(torch.rand(4, 1)).mean.shape
        torch.Size([4])
    """

    _whitened = True
    prior_distribution = VariationalStrategy.prior_distribution
    kl_divergence = VariationalStrategy.kl_divergence

    def __call__(self, x: torch.Tensor, prior: bool = False, **kwargs) -> MultivariateNormal:
        """``q(f(x))`` ``(*batch, b)`` for inputs ``x (*batch, b, d)``; the prior if ``prior=True``."""
        if prior:
            return self.model.forward(x, **kwargs)
        x = self._check_inputs(x)
        self._initialize()
        _, mean_x, K_zz, K_zx, kxx_diag, kxx_dense = self._joint_prior(x, **kwargs)
        eps = self._jitter(K_zz.dtype)
        eye = torch.eye(K_zz.shape[-1], dtype=K_zz.dtype, device=K_zz.device)
        A = contour_integral_quad(K_zz + eps * eye, K_zx, inverse=True)  # A = K_zz^{-1/2} K_zx (*batch, m, b)
        v_mean, v_chol = self._variational_distribution.mean_and_scale_tril()
        mean = mean_x + (A.mT @ v_mean.unsqueeze(-1)).squeeze(-1)
        B = v_chol.mT @ A
        return MultivariateNormal(mean, _PredictiveCovariance(kxx_diag + eps, _add_jitter(kxx_dense, eps), A, B))
