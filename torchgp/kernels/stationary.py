r"""Stationary kernels: functions of ``x - x'`` (R&W 2006, ch. 4).

All take ``ard_num_dims``, ``batch_shape``, ``active_dims``, ``lengthscale_prior`` and
``lengthscale_constraint``. Shapes: ``x1 (*batch, n, d)``, ``x2 (*batch, m, d)`` →
``(*batch, n, m)``, or ``(*batch, n)`` with ``diag=True`` (equal to 1 for the unit-variance
kernels below).
"""

from __future__ import annotations

import math

import torch

from torchgp import settings
from torchgp._shapes import broadcast_shapes
from torchgp.constraints import Positive
from torchgp.errors import ShapeError
from torchgp.kernels._fused import _LOG2E, stationary_covariance
from torchgp.kernels.distance import sq_dist, sqrt_rounded
from torchgp.kernels.kernel import Kernel
from torchgp.kernels.spectral_mixture import CosineKernel, SpectralMixtureKernel  # re-exported: import paths stay

_LN2 = math.log(2.0)

__all__ = [
    "StationaryKernel",
    "RBFKernel",
    "MaternKernel",
    "RQKernel",
    "PeriodicKernel",
    "CosineKernel",
    "SpectralMixtureKernel",
]


def _ones_diag(x1: torch.Tensor, batch_shape: torch.Size) -> torch.Tensor:
    shape = broadcast_shapes(x1.shape[:-1], (*batch_shape, 1))
    return torch.ones(shape, dtype=x1.dtype, device=x1.device)


def _concat(feats: list[torch.Tensor]) -> torch.Tensor:
    """Feature blocks ``(*batch_i, n, d_i)`` as one ``(*batch, n, Σ d_i)``, batch shapes broadcast."""
    if len(feats) == 1:
        return feats[0]
    batch = broadcast_shapes(*(f.shape[:-2] for f in feats))
    return torch.cat([f.expand(*batch, *f.shape[-2:]) for f in feats], dim=-1)


class StationaryKernel(Kernel):
    r"""A kernel of the squared scaled distance: :math:`k(x, x') = \kappa(r^2)`, :math:`r^2 = \lVert\phi(x) - \phi(x')\rVert^2`.

    ``φ(x) = x / ℓ`` unless a subclass overrides :meth:`scaled` (the periodic kernel maps to
    ``(cos, sin)`` features). A subclass states only its profile (GPflow's ``K_r2`` pattern):

    - ``K_r2(r2, *params)``: κ element-wise on ``r2 (*batch, n, m)``, out of place;
    - ``dK_dr2(r2, K, *params)``: ∂κ/∂r² from ``r2`` and ``K = κ(r2)``, same shape;
    - ``profile_params()``: κ's own parameters (default none), shaped ``(*batch, 1, 1)``, and optionally
      ``dK_dparams(r2, K, *params)``: their derivatives ∂κ/∂θ (else autograd through ``K_r2`` gives them);
    - ``dK_dr2_uses_r2 = False`` when ``dK_dr2`` reads only ``K`` (then ``r²`` is not kept);
      ``dK_dr2_factor = c`` when κ' = c κ (the exponential profiles, κ = exp(c r²) as κ(0) = 1), which saves
      a pass; such kernels (without profile parameters) multiply in one node: a ``ProductKernel`` of them is
      ``exp(c r²)`` on their concatenated features, and their matrix is one GEMM and one ``exp``.

    ``forward(x1, x2, outputscale=s)`` returns ``s κ(r²)`` from the same node (a ``ScaleKernel``
    over a stationary kernel passes its ``outputscale (*batch)`` this way).

    ``kernel(x1, x2, last_dim_is_batch=True)`` is ``(*batch, d, n, m)``: the inputs are scaled by their
    per-dimension lengthscales (ARD) first, then each dimension is one batch (as in GPyTorch); a kernel whose
    features are not one column per dimension says how to split them in ``_per_dim``.

    With ``dK_dr2`` written, the matrix and its gradients go through one fused autograd node
    (:func:`~torchgp.kernels._fused.stationary_covariance`: an O(n m) backward plus two
    ``(n × m)(m × d)`` products, no n × m autograd intermediates); without it, or inside
    ``settings.fused_kernels(False)``, autograd differentiates ``K_r2`` itself (needed for
    second derivatives).

    Example:
        >>> import torch, torchgp
        >>> class Cauchy(torchgp.kernels.StationaryKernel):
        ...     def K_r2(self, r2):
        ...         return 1 / (1 + r2)
        ...     def dK_dr2(self, r2, K):
        ...         return -K * K
        ...     dK_dr2_uses_r2 = False
        >>> k = Cauchy()
        >>> k.lengthscale = 1.0
        >>> k(torch.tensor([[0.0], [1.0]])).to_dense().detach()
        tensor([[1.0000, 0.5000],
                [0.5000, 1.0000]])
    """

    has_lengthscale = True
    is_stationary = True
    dK_dr2_uses_r2 = True
    dK_dr2_factor: float | None = None  # c when κ' = c κ (then the backward needs only K)

    def K_r2(self, r2: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        """κ(r²) element-wise: ``(*batch, n, m)`` → ``(*batch, n, m)``."""
        raise NotImplementedError(f"{type(self).__name__} must implement K_r2(r2) (or forward).")

    def dK_dr2(self, r2: torch.Tensor, K: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        """∂κ/∂r² element-wise, ``(*batch, n, m)``; not overridden: plain autograd through ``K_r2``."""
        raise NotImplementedError

    # Optional ``K_dK_r2(r2, *params) -> (K, ∂κ/∂r²)``: both at once where they share costly parts (the
    # fused node then keeps ∂κ/∂r² instead of r² and recomputes nothing in the backward).
    K_dK_r2 = None
    # Optional ``dK_dparams(r2, K, *params) -> (∂κ/∂θ_1, ...)``, each broadcastable to ``(*batch, n, m)``: the
    # closed-form derivatives in the profile's own parameters (else the fused node differentiates ``K_r2`` by
    # autograd inside its backward).
    dK_dparams = None

    def profile_params(self) -> tuple[torch.Tensor, ...]:
        """κ's own parameters, each broadcastable against ``(*batch, n, m)``."""
        return ()

    def _fused(self) -> bool:
        return settings.fused_kernels.on() and type(self).dK_dr2 is not StationaryKernel.dK_dr2

    def _takes_outputscale(self) -> bool:
        # only the base class's own forward/forward_diag know ``outputscale``; a subclass overriding them would drop it
        cls = type(self)
        return cls.forward is StationaryKernel.forward and cls.forward_diag is StationaryKernel.forward_diag

    def _exp_rate(self) -> float | None:
        """``c`` when this kernel is ``exp(c r²)`` (``c < 0``) on the fused path, else ``None``.

        ``dK_dr2_factor = c`` states ``κ' = c κ``, and with ``κ(0) = 1`` (every unit-variance kernel here) that is
        ``κ = exp(c r²)``; such factors of a product are evaluated together by :meth:`_exp_product`. Profiles with
        their own parameters, overridden forwards and the unfused setting keep the element-wise product.
        """
        c = self.dK_dr2_factor
        if c is None or c >= 0 or type(self).profile_params is not StationaryKernel.profile_params:
            return None
        return c if self._takes_outputscale() and self._fused() else None

    def _exp_product(self, factors, x1, x2, outputscale=None) -> torch.Tensor:
        r"""``s Π_i exp(c_i r_i²)`` ``(*batch, n, m)`` as one fused node: ``exp(c Σ_i r_i²(c_i/c))``, ``c`` = this kernel's.

        Each factor's squared distance is ``r_i² = ‖φ_i(x) − φ_i(x')‖²`` on its own columns (``active_dims``), so

        .. math:: \prod_i e^{c_i r_i^2} = e^{c \lVert \psi(x) - \psi(x') \rVert^2},\qquad
            \psi(x) = \big[\sqrt{c_1/c}\,\phi_1(x),\ \ldots,\ \sqrt{c_k/c}\,\phi_k(x)\big]

        (concatenated features, broadcast to one batch shape): one n × m pass and one closed-form backward
        instead of a node per factor plus the product's. ``factors`` are kernels with :meth:`_exp_rate` set,
        ``self`` among them; ``x1 (*batch, n, d)``, ``x2 (*batch, m, d)`` (``x2 is x1`` for the symmetric matrix);
        ``outputscale (*batch)`` optional.
        """
        c = self.dK_dr2_factor
        same = x2 is x1
        left, right = [], []
        for k in factors:
            w = math.sqrt(k.dK_dr2_factor / c)
            for x, out in ((x1, left),) if same else ((x1, left), (x2, right)):
                f = k.scaled(x if k.active_dims is None else x.index_select(-1, k.active_dims))
                out.append(f if w == 1.0 else f * w)
        a = _concat(left)
        b = None if same else _concat(right)
        return stationary_covariance(self, a, b, scale=outputscale)

    def _per_dim(self, a: torch.Tensor, d: int) -> torch.Tensor:
        """Scaled features ``(*batch, n, d)`` as one batch per input dimension, ``(*batch, d, n, 1)``.

        For ``last_dim_is_batch``: each dimension is scaled by its own lengthscale before it becomes a batch.
        """
        if a.shape[-1] != d:
            raise ShapeError(
                f"{type(self).__name__}.scaled maps {d} input columns to {a.shape[-1]} features, so last_dim_is_batch "
                "cannot split them per dimension: override _per_dim(a, d) to return (*batch, d, n, k) features."
            )
        return a.mT.unsqueeze(-1)

    def forward(self, x1, x2, outputscale=None, last_dim_is_batch=False, **params):
        """``(*batch, n, m)``; ``outputscale (*batch)``, if given, multiplies it inside the fused node.

        With ``last_dim_is_batch``, ``(*batch, d, n, m)``: dimension j alone, scaled by its own ``ℓ_j`` (ARD).
        """
        a = self.scaled(x1)
        same = x2 is x1
        b = a if same else self.scaled(x2)
        theta = self.profile_params()
        if last_dim_is_batch:
            a = self._per_dim(a, x1.shape[-1])
            b = a if same else self._per_dim(b, x2.shape[-1])
            theta = tuple(t.unsqueeze(-3) for t in theta)  # (*batch, 1, 1, 1): shared by the d batches
            outputscale = None if outputscale is None else outputscale.unsqueeze(-1)
        if self._fused():
            return stationary_covariance(self, a, None if same else b, *theta, scale=outputscale)
        K = self.K_r2(sq_dist(a, b), *theta)
        return K if outputscale is None else K * outputscale[..., None, None]

    def forward_diag(self, x1, x2, outputscale=None, last_dim_is_batch=False, **params):
        """``(*batch, n)``, or ``(*batch, d, n)`` with ``last_dim_is_batch``; κ(0) when ``x1 is x2``."""
        theta = self.profile_params()
        if last_dim_is_batch:
            theta = tuple(t.unsqueeze(-3) for t in theta)
            outputscale = None if outputscale is None else outputscale.unsqueeze(-1)
        if x1 is x2:  # r = 0: κ(0) without touching the inputs
            ones = _ones_diag(x1, self.batch_shape)
            if last_dim_is_batch:  # (*batch, d, n)
                ones = ones.unsqueeze(-2).expand(*ones.shape[:-1], x1.shape[-1], ones.shape[-1])
            r2 = torch.zeros_like(ones).unsqueeze(-1)
        else:
            a, b = self.scaled(x1), self.scaled(x2)
            if last_dim_is_batch:
                a, b = self._per_dim(a, x1.shape[-1]), self._per_dim(b, x2.shape[-1])
            r2 = (a - b).square().sum(-1, keepdim=True)
        K = self.K_r2(r2, *theta)[..., 0]
        return K if outputscale is None else K * outputscale[..., None]


class RBFKernel(StationaryKernel):
    r"""Squared-exponential kernel (R&W eq. 4.9).

    .. math:: k(x, x') = \exp\!\big(-\tfrac12 r^2\big),\quad r = \lVert (x - x')/\ell \rVert,\qquad
        \frac{\partial k}{\partial r^2} = -\tfrac12 k
    """

    dK_dr2_uses_r2 = False
    dK_dr2_factor = -0.5

    def K_r2(self, r2):
        return r2.mul(-0.5).exp_()

    def _K_r2_(self, r2):
        return r2.mul_(-0.5).exp_()  # in place, for the fused node when r² is not kept

    def dK_dr2(self, r2, K):
        return K.mul(-0.5)


class MaternKernel(StationaryKernel):
    r"""Matérn kernel with smoothness ν ∈ {1/2, 3/2, 5/2} (R&W eqs. 4.14, 4.17).

    .. math::
        k_{1/2} = e^{-r},\quad k_{3/2} = (1 + \sqrt3 r) e^{-\sqrt3 r},\quad
        k_{5/2} = (1 + \sqrt5 r + \tfrac53 r^2) e^{-\sqrt5 r},\quad r = \lVert (x - x')/\ell \rVert

    and their derivatives in r²: :math:`-e^{-r}/(2r)`, :math:`-\tfrac32 e^{-\sqrt3 r}`,
    :math:`-\tfrac56 (1 + \sqrt5 r) e^{-\sqrt5 r}` (the last two finite at r = 0; the first is
    taken as 0 there, where ``r = √max(r², 10⁻³⁰)`` is flat).

    Args:
        nu: smoothness, one of 0.5, 1.5, 2.5 (default 2.5).
    """

    def __init__(self, nu: float = 2.5, **kwargs):
        if nu not in (0.5, 1.5, 2.5):
            raise ValueError(f"MaternKernel: nu must be 0.5, 1.5 or 2.5; got {nu}.")
        super().__init__(**kwargs)
        self.nu = nu

    def K_r2(self, r2):
        r = r2.clamp_min(1e-30).sqrt()  # finite gradient at r = 0
        if self.nu == 0.5:
            return torch.exp(-r)
        sr = math.sqrt(2 * self.nu) * r
        poly = 1 + sr if self.nu == 1.5 else 1 + sr + (5.0 / 3.0) * r2
        return poly * torch.exp(-sr)

    def K_dK_r2(self, r2):
        if self.nu == 0.5:
            r = r2.clamp_min(1e-30).sqrt_()
            K = torch.exp(-r)
            return K, torch.where(r2 >= 1e-30, K / (-2 * r), 0.0)
        # r² ≥ 0 from the fused node; both profiles are smooth at 0. Seven passes over n × m for ν = 5/2 (five for
        # 3/2): with u = −√(2ν) r and e = exp(u), κ = e − e·u (3/2), κ = e − e·(u − 5/3 r²) (5/2), and
        # ∂κ/∂r² = −3/2 e (3/2), −5/6 (e − e·u) (5/2). The exponent in base 2, v = u log₂e and e = 2^v (exp2 is
        # 3-4x faster than exp per element on AVX-512 CPUs), so u = v ln 2 inside the products' constants
        v = sqrt_rounded(r2).mul_(-math.sqrt(2 * self.nu) * _LOG2E)  # correctly rounded, and faster on CPU
        e = v.exp2()
        if self.nu == 1.5:
            return torch.addcmul(e, e, v, value=-_LN2), e.mul_(-1.5)
        K = torch.addcmul(e, e, torch.add(v, r2, alpha=-5.0 / (3.0 * _LN2)), value=-_LN2)
        return K, torch.addcmul(e, e, v, value=-_LN2).mul_(-5.0 / 6.0)

    def dK_dr2(self, r2, K):
        r = r2.clamp_min(1e-30).sqrt()
        if self.nu == 0.5:
            return torch.where(r2 >= 1e-30, K / (-2 * r), 0.0)
        sr = math.sqrt(2 * self.nu) * r
        e = torch.exp(-sr)
        return e.mul_(-1.5) if self.nu == 1.5 else e.mul_(sr.add_(1)).mul_(-5.0 / 6.0)


class RQKernel(StationaryKernel):
    r"""Rational quadratic kernel (R&W eq. 4.19).

    .. math:: k(x, x') = \Big(1 + \frac{r^2}{2\alpha}\Big)^{-\alpha},\qquad
        \frac{\partial k}{\partial r^2} = -\frac12 \Big(1 + \frac{r^2}{2\alpha}\Big)^{-\alpha - 1}

    Args:
        alpha_constraint: constraint on α (default ``Positive()``).
        alpha_prior: optional prior on α.
    """

    def __init__(self, alpha_constraint=None, alpha_prior=None, **kwargs):
        super().__init__(**kwargs)
        constraint = Positive() if alpha_constraint is None else alpha_constraint
        self.register_constrained(
            "alpha", constraint.transform(torch.zeros(*self.batch_shape, 1)), constraint, alpha_prior
        )

    def profile_params(self):
        return (self.alpha.unsqueeze(-1),)  # (*batch, 1, 1)

    def K_r2(self, r2, alpha):
        u = (r2 * (0.5 / alpha)).add_(1)  # u = 1 + r²/(2α), a fresh buffer (a multiply: cheaper than a divide)
        return u.pow(-alpha) if torch.is_grad_enabled() else u.pow_(-alpha)

    def dK_dr2(self, r2, K, alpha):
        u = (r2 * (-1 / alpha)).sub_(2)  # −2u, one buffer
        return torch.div(K, u, out=u) if u.shape == K.shape and not torch.is_grad_enabled() else K / u

    def dK_dparams(self, r2, K, alpha):
        """``(∂κ/∂α,)`` with ``∂ log κ/∂α = 1 − 1/u − log u``, ``u = 1 + r²/(2α)`` (from ``log κ = −α log u``)."""
        u = r2 * (0.5 / alpha)
        if torch.is_grad_enabled():
            u = u + 1
            return ((1 - 1 / u - torch.log(u)) * K,)
        u.add_(1)
        log_u = torch.log(u)
        d = u.reciprocal_().neg_().add_(1).sub_(log_u)  # in u's buffer
        return (d.mul_(K) if d.shape == K.shape else d * K,)


class PeriodicKernel(StationaryKernel):
    r"""Periodic kernel (MacKay 1998), per-dimension period ``p`` and lengthscale ``ℓ``.

    .. math:: k(x, x') = \exp\!\Big(-2 \sum_j \sin^2\!\big(\pi (x_j - x'_j)/p_j\big) / \ell_j\Big)

    (GPyTorch's convention: ℓ is not squared.) As ``4 sin²(u/2) = (cos u − cos u')² + (sin u − sin u')²``
    for ``u − u' = 2π(x_j − x'_j)/p_j``, this is the RBF profile ``exp(−r²/2)`` on the features
    ``φ(x) = (cos(2πx/p), sin(2πx/p)) / √ℓ`` ``(*batch, n, 2d)``, and it shares the fused path.

    Args:
        period_length_prior, period_length_constraint: prior/constraint on p (default ``Positive()``).
    """

    dK_dr2_uses_r2 = False
    dK_dr2_factor = -0.5

    def __init__(self, period_length_prior=None, period_length_constraint=None, **kwargs):
        super().__init__(**kwargs)
        constraint = Positive() if period_length_constraint is None else period_length_constraint
        d = 1 if self.ard_num_dims is None else self.ard_num_dims
        init = constraint.transform(torch.zeros(*self.batch_shape, 1, d))
        self.register_constrained("period_length", init, constraint, period_length_prior)

    def scaled(self, x):
        """``φ(x) = (cos(2πx/p), sin(2πx/p)) / √ℓ``: ``(*batch, n, d)`` → ``(*batch, n, 2d)``."""
        u = x * (2 * math.pi / self.period_length)
        w = self.lengthscale.rsqrt()
        return torch.cat([torch.cos(u) * w, torch.sin(u) * w], dim=-1)

    def _per_dim(self, a, d):
        """``(cos, sin)`` features ``(*batch, n, 2d)`` as one batch per input dimension, ``(*batch, d, n, 2)``."""
        return a.unflatten(-1, (2, d)).movedim(-1, -3)

    def K_r2(self, r2):
        return r2.mul(-0.5).exp_()

    def _K_r2_(self, r2):
        return r2.mul_(-0.5).exp_()  # in place, for the fused node when r² is not kept

    def dK_dr2(self, r2, K):
        return K.mul(-0.5)
