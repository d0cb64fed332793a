r"""Natural parametrisations of ``q(u) = N(m, S)`` for natural-gradient descent (Salimbeni et al. 2018).

Natural parameters ``θ₁ = S⁻¹m``, ``θ₂ = -½ S⁻¹``; expectation parameters ``η₁ = m``,
``η₂ = S + m mᵀ``. For an exponential family the natural gradient with respect to θ is the
ordinary gradient with respect to η (Hensman et al. 2013, eq. 12; Salimbeni et al. 2018, §2.2):

.. math:: \tilde\nabla_\theta \mathcal L = \frac{\partial \mathcal L}{\partial \eta}.

So the forward map θ → (m, S) is a ``torch.autograd.Function`` whose backward returns
``∂L/∂η`` in place of ``∂L/∂θ``: after ``loss.backward()`` the ``.grad`` of a natural parameter
*is* its natural gradient, and :class:`torchgp.optim.NGD` is plain gradient descent on it. (These
parameters must therefore be trained by NGD, not by Adam.) For a conjugate (Gaussian) model one
step with ``lr = 1`` lands on the optimum.
"""

from __future__ import annotations

import torch
from torch import nn

from torchgp.linalg.cholesky import psd_safe_cholesky
from torchgp.variational._variational_distribution import _VariationalDistribution


def _sym(A: torch.Tensor) -> torch.Tensor:
    return 0.5 * (A + A.mT)


class _NaturalToMeanCovar(torch.autograd.Function):
    """(θ₁, θ₂) → (m, S); backward returns (∂L/∂η₁, ∂L/∂η₂)."""

    @staticmethod
    def forward(ctx, nat_vec, nat_mat):
        L_prec = psd_safe_cholesky(-2.0 * _sym(nat_mat))  # S⁻¹ = L Lᵀ
        S = torch.cholesky_inverse(L_prec)
        mean = (S @ nat_vec.unsqueeze(-1)).squeeze(-1)
        ctx.save_for_backward(mean)
        return mean, S

    @staticmethod
    def backward(ctx, g_mean, g_S):
        (mean,) = ctx.saved_tensors
        # m = η₁, S = η₂ - η₁η₁ᵀ  ⇒  ∂L/∂η₂ = sym(∂L/∂S), ∂L/∂η₁ = ∂L/∂m - 2 sym(∂L/∂S) m
        g_eta2 = _sym(g_S) if g_S is not None else torch.zeros_like(mean.unsqueeze(-1) * mean.unsqueeze(-2))
        g_eta1 = (g_mean if g_mean is not None else torch.zeros_like(mean)) - 2 * (g_eta2 @ mean.unsqueeze(-1)).squeeze(
            -1
        )
        return g_eta1, g_eta2


class _TrilNaturalToMeanCovar(torch.autograd.Function):
    """(θ₁, C) with S⁻¹ = CᵀC, C lower triangular → (m, S); backward gives the tangent of C that moves θ₂ by -∂L/∂η₂."""

    @staticmethod
    def forward(ctx, nat_vec, nat_tril):
        C = nat_tril.tril()
        eye = torch.eye(C.shape[-1], dtype=C.dtype, device=C.device).expand_as(C)
        L = torch.linalg.solve_triangular(C, eye, upper=False)  # L = C⁻¹ = chol(S): S = (CᵀC)⁻¹ = L Lᵀ
        S = L @ L.mT
        mean = (S @ nat_vec.unsqueeze(-1)).squeeze(-1)
        ctx.save_for_backward(mean, L, C)
        return mean, S

    @staticmethod
    def backward(ctx, g_mean, g_S):
        mean, L, C = ctx.saved_tensors
        g_eta2 = _sym(g_S) if g_S is not None else torch.zeros_like(C)
        g_eta1 = (g_mean if g_mean is not None else torch.zeros_like(mean)) - 2 * (g_eta2 @ mean.unsqueeze(-1)).squeeze(
            -1
        )
        # θ₂ = -½ CᵀC. The step θ₂ ← θ₂ - lr G (G = ∂L/∂η₂) is dP = 2 lr G on P = CᵀC = S⁻¹, so
        # dS = -S dP S; the Cholesky tangent of S = L Lᵀ is dL = L Φ(L⁻¹ dS L⁻ᵀ) = L Φ(-Lᵀ dP L)
        # (Φ = lower triangle with halved diagonal), and C = L⁻¹ moves by dC = -C dL C = Φ(Lᵀ dP L) C.
        # The optimiser steps C ← C - lr grad, so grad = Φ(-2 Lᵀ G L) C.
        X = -2 * L.mT @ g_eta2 @ L
        phi = X.tril(-1) + 0.5 * torch.diag_embed(X.diagonal(dim1=-2, dim2=-1))
        return g_eta1, phi @ C


def _prior_precision(dist: _VariationalDistribution, prior_dist) -> torch.Tensor:
    """Set ``dist.natural_vec = K⁻¹ μ`` (with the base class's noisy mean); return the prior precision ``K⁻¹``."""
    prec = torch.cholesky_inverse(prior_dist.scale_tril.detach())
    mean = dist._noisy_mean(prior_dist)
    dist.natural_vec.copy_((prec @ mean.unsqueeze(-1)).squeeze(-1).expand_as(dist.natural_vec))
    return prec


class _NaturalVariationalDistribution(_VariationalDistribution):
    """Base of the distributions whose parameters' ``.grad`` is their natural gradient (GPyTorch's name).

    Subclasses define :meth:`mean_and_covariance` through a map whose backward returns the gradient
    with respect to the expectation parameters; :class:`torchgp.optim.NGD` then steps on them.
    """

    def mean_and_covariance(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(m (*batch, m), S (*batch, m, m))``."""
        raise NotImplementedError(f"{type(self).__name__} must implement mean_and_covariance().")

    def mean_and_scale_tril(self):
        """``(m, chol(S))``: the factor of the covariance from :meth:`mean_and_covariance`."""
        mean, S = self.mean_and_covariance()
        return mean, psd_safe_cholesky(S)


class NaturalVariationalDistribution(_NaturalVariationalDistribution):
    r"""``q(u)`` in natural parameters ``natural_vec = S⁻¹m`` ``(*batch, m)`` and
    ``natural_mat = -½ S⁻¹`` ``(*batch, m, m)``; train them with :class:`torchgp.optim.NGD`.

    Args:
        num_inducing_points: ``m``.
        batch_shape: batch of independent distributions.
        mean_init_std: noise added to the mean at initialisation.

    Example:
        >>> import torch, torchgp
        >>> q = torchgp.variational.NaturalVariationalDistribution(3)
        >>> torch.allclose(q().covariance_matrix, torch.eye(3))
        True
    """

    def __init__(
        self, num_inducing_points: int, batch_shape: torch.Size = torch.Size([]), mean_init_std: float = 1e-3, **kwargs
    ):
        super().__init__(num_inducing_points, batch_shape, mean_init_std)
        m = self.num_inducing_points
        self.register_parameter("natural_vec", nn.Parameter(torch.zeros(*self.batch_shape, m)))
        self.register_parameter(
            "natural_mat", nn.Parameter(-0.5 * torch.eye(m).expand(*self.batch_shape, m, m).clone())
        )

    def mean_and_covariance(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(m (*batch, m), S (*batch, m, m))`` through the natural-gradient map."""
        return _NaturalToMeanCovar.apply(self.natural_vec, self.natural_mat)

    def initialize_variational_distribution(self, prior_dist):
        with torch.no_grad():
            prec = _prior_precision(self, prior_dist)
            self.natural_mat.copy_((-0.5 * prec).expand_as(self.natural_mat))


class TrilNaturalVariationalDistribution(_NaturalVariationalDistribution):
    r"""``q(u)`` with ``natural_vec = S⁻¹m`` and ``natural_tril_mat = C``, ``S⁻¹ = CᵀC`` (C lower
    triangular, so ``C⁻¹`` is the Cholesky factor of S; the natural matrix is ``-½ CᵀC``, GPyTorch's
    parametrisation): the precision stays positive definite whatever the step size.

    The ``.grad`` of ``natural_tril_mat`` is the first-order tangent of the natural-gradient step,
    so NGD with small ``lr`` follows the natural-gradient flow; with ``lr = 1`` it is close to, not
    exactly at, the conjugate optimum (use :class:`NaturalVariationalDistribution` for that).

    Args:
        num_inducing_points: ``m``.
        batch_shape: batch of independent distributions.
        mean_init_std: noise added to the mean at initialisation.
    """

    def __init__(
        self, num_inducing_points: int, batch_shape: torch.Size = torch.Size([]), mean_init_std: float = 1e-3, **kwargs
    ):
        super().__init__(num_inducing_points, batch_shape, mean_init_std)
        m = self.num_inducing_points
        self.register_parameter("natural_vec", nn.Parameter(torch.zeros(*self.batch_shape, m)))
        self.register_parameter("natural_tril_mat", nn.Parameter(torch.eye(m).expand(*self.batch_shape, m, m).clone()))

    def mean_and_covariance(self):
        """``(m (*batch, m), S (*batch, m, m))`` through the natural-gradient map."""
        return _TrilNaturalToMeanCovar.apply(self.natural_vec, self.natural_tril_mat)

    def initialize_variational_distribution(self, prior_dist):
        with torch.no_grad():
            _prior_precision(self, prior_dist)  # sets natural_vec
            chol = prior_dist.scale_tril.detach()  # C = chol(K)⁻¹ gives CᵀC = K⁻¹
            eye = torch.eye(chol.shape[-1], dtype=chol.dtype, device=chol.device).expand_as(chol)
            tril = torch.linalg.solve_triangular(chol, eye, upper=False)
            self.natural_tril_mat.copy_(tril.expand_as(self.natural_tril_mat))
