r"""One autograd node for a stationary kernel matrix ``K = k(r²)``: forward in one GEMM, backward in closed form.

For scaled inputs ``a (*batch, n, d)``, ``b (*batch, m, d)`` (``x / ℓ`` or any feature map) and a
profile ``k`` of the squared distance ``r²_ij = ‖a_i − b_j‖²``, the forward is one augmented GEMM

.. math:: r^2 = [\,a,\ \lVert a\rVert^2,\ 1\,]\,[\,-2b,\ 1,\ \lVert b\rVert^2\,]^\top,\qquad K = k(r^2)

(on inputs centred at their mean, which removes the cancellation of large offsets), and nothing else
of size n × m is kept but ``K`` (and ``r²`` for profiles whose derivative needs it). The backward
receives ``G = ∂L/∂K`` once and forms ``W = G ∘ k'(r²)``; then, from ``∂r²_ij/∂a_i = 2(a_i − b_j)``,

.. math::
    \frac{\partial L}{\partial a} = 2\big(\mathrm{diag}(W\mathbf 1)\, a - W b\big),\qquad
    \frac{\partial L}{\partial b} = 2\big(\mathrm{diag}(W^\top\mathbf 1)\, b - W^\top a\big)

— two matrix products with ``[b, 1]`` and ``[a, 1]`` (R&W 2006, eq. 5.9 is the outer chain rule:
``∂L/∂θ = Σ_ij G_ij ∂K_ij/∂θ``). Gradients to lengthscales, periods and the raw inputs follow by
autograd through the O(n d) map ``x → a``; a profile's own parameters (RQ's α) get theirs from one
autograd pass through ``k`` inside the backward. No n × n × d tensor is ever formed.
"""

from __future__ import annotations

import math

import torch
from torch.autograd.function import once_differentiable

from torchgp.kernels.distance import _DIRECT_LIMIT

_LOG2E = 1.0 / math.log(2.0)  # exp(x) = 2^(x log₂e)

# Up to this many entries per n × m matrix the backward takes the route of fewest operations (each costs a few µs of
# dispatch, more than its arithmetic at n ≤ 64), else the one of fewest passes over the matrix.
_SMALL = 64 * 64


def _centred(a: torch.Tensor, b: torch.Tensor | None):
    """``a`` and ``b`` ``(*batch, ·, d)`` shifted by one finite point amid ``a``'s rows, or as they are when small.

    Differences, and so r², do not change. The shift (``a``'s first row, finite entries) only keeps the Gram
    form of large problems from losing digits to a common offset; small problems form the differences directly
    (:func:`pairwise_sq_dist`), which needs none (and saves these few small operations per call).
    """
    m = a.shape[-2] if b is None else b.shape[-2]
    if a.shape[-2] * m * a.shape[-1] <= _DIRECT_LIMIT:
        return a, (a if b is None else b)
    # a's first row (any point amid the data bounds |a_i − shift| by their spread); a non-finite entry of it is
    # replaced by 0, i.e. that column is left unshifted
    shift = torch.nan_to_num(a[..., :1, :], 0.0, 0.0, 0.0)
    ac = a - shift  # shift: (*batch, 1, d)
    return ac, (ac if b is None else b - shift)


def pairwise_sq_dist(ac: torch.Tensor, bc: torch.Tensor, symmetric: bool) -> torch.Tensor:
    """``r²_ij = ‖a_i − b_j‖²`` ``(*batch, n, m)`` in one GEMM of augmented inputs, clamped at 0.

    ``ac (*batch, n, d)`` and ``bc (*batch, m, d)`` should be centred; the diagonal is exactly 0 when
    ``symmetric`` (``bc is ac``). Small problems form the differences directly (exact, as
    :func:`~torchgp.kernels.distance.sq_dist` does): square roots of Gram-form round-off would
    show at r ≈ 0 (``√ε ≈ 10⁻⁸`` in float64).
    """
    if ac.shape[-2] * bc.shape[-2] * ac.shape[-1] <= _DIRECT_LIMIT:
        return (ac.unsqueeze(-2) - bc.unsqueeze(-3)).square().sum(-1)
    a2 = ac.square().sum(-1, keepdim=True)
    b2 = a2 if symmetric else bc.square().sum(-1, keepdim=True)
    one_a, one_b = torch.ones_like(a2), torch.ones_like(b2)
    lhs = torch.cat([ac, a2, one_a], dim=-1)  # (*batch, n, d + 2)
    rhs = torch.cat([bc * -2, one_b, b2], dim=-1)  # (*batch, m, d + 2)
    r2 = lhs @ rhs.mT  # ‖a‖² − 2 a·b + ‖b‖² in one pass over the n × m output
    if symmetric:
        r2.diagonal(dim1=-2, dim2=-1).zero_()
    return r2.clamp_min_(0)


def exp_sq_dist(ac: torch.Tensor, bc: torch.Tensor, symmetric: bool, c: float, scale: torch.Tensor | None):
    r"""``K_ij = s · exp(c ‖a_i − b_j‖²)`` ``(*batch, n, m)`` from one GEMM and one ``exp`` pass (``c < 0``).

    The rate and ``log s`` ride in the augmented inputs,

    .. math:: c\,r^2_{ij} + \log s = [\,a_i,\ c\lVert a_i\rVert^2,\ 1\,]\cdot
        [\,-2c\,b_j,\ 1,\ c\lVert b_j\rVert^2 + \log s\,],

    so no separate clamp, rate or scale pass touches the n × m output (round-off can leave ``r²`` at −10⁻¹⁶ |a|²
    off the diagonal, which moves ``K`` by as little; the symmetric diagonal is set to ``s`` exactly in the
    exponent). The exponent is formed in base 2 (``c log₂e`` and ``log₂ s`` in the inputs, then ``exp2``: 3-4x
    faster than ``exp`` per element on AVX-512 CPUs, float32 and float64; its relative error, a few units of
    rounding times ``|c r²|``, is that of the Gram form's own exponent). ``ac``, ``bc`` centred; ``scale``
    ``(*batch)`` or ``None`` (``s = 1``).
    """
    c = c * _LOG2E
    a2c = ac.square().sum(-1, keepdim=True).mul_(c)  # c‖a‖² log₂e: (*batch, n, 1)
    col = a2c if symmetric else bc.square().sum(-1, keepdim=True).mul_(c)
    log_s = None if scale is None else scale.log2()
    if log_s is not None:
        # (*batch, m, 1); s's batch may be wider than b's
        col = col + log_s if log_s.dim() == 0 else col + log_s[..., None, None]
    one = torch.ones_like(a2c)
    lhs = torch.cat([ac, a2c, one], dim=-1)  # (*batch, n, d + 2)
    rest = bc * (-2 * c)
    if col.shape[:-2] != rest.shape[:-2]:
        rest = rest.expand(*col.shape[:-1], rest.shape[-1])
    rhs = torch.cat([rest, one if one.shape == col.shape else torch.ones_like(col), col], dim=-1)  # (*batch, m, d + 2)
    E = lhs @ rhs.mT  # (c r² + log s) log₂e
    if symmetric:
        diag = E.diagonal(dim1=-2, dim2=-1)
        if log_s is None:
            diag.zero_()
        elif log_s.dim() == 0:
            diag.fill_(log_s)
        else:
            diag.copy_(log_s[..., None].expand(diag.shape))
    return E.exp2_()


def _fits_in(big: torch.Size, small: torch.Size) -> bool:
    """Whether ``small`` broadcasts to ``big`` unchanged (an in-place multiply keeps the shape); no tensor work."""
    return len(small) <= len(big) and all(s == 1 or s == b for s, b in zip(reversed(small), reversed(big)))


def _owns(dk: torch.Tensor, G: torch.Tensor, *kept: torch.Tensor | None) -> bool:
    """Whether ``dk`` is a fresh full-size buffer that may be overwritten (not a view of a kept tensor)."""
    if dk.shape != G.shape or not dk.is_contiguous():
        return False
    ptr = dk.untyped_storage().data_ptr()
    return all(t is None or t.untyped_storage().data_ptr() != ptr for t in kept)


class StationaryCovariance(torch.autograd.Function):
    """``(kernel, a (*b,n,d), b (*b,m,d) or None, s (*b) or None, *θ) → K (*b,n,m)``, ``K = s kernel.K_r2(r², *θ)``.

    ``b is None`` means ``b = a`` (a symmetric matrix); ``θ`` are the profile's own parameters
    (``kernel.profile_params()``), broadcastable against ``(*b, n, m)``. For profiles with
    ``k' = c k`` (``kernel.dK_dr2_factor = c``: RBF, periodic) the backward needs only ``K``, and
    ``∂L/∂s = Σ G∘K / s`` comes from the row sums it already forms.
    """

    @staticmethod
    def forward(ctx, kernel, a, b, scale, *theta):
        symmetric = b is None
        ac, bc = _centred(a, b)
        own = getattr(kernel, "sq_dist_func", None)  # a caller's squared-distance function (GPyTorch's Functions)
        K = None
        if own is None and not theta and ac.shape[-2] * bc.shape[-2] * ac.shape[-1] > _DIRECT_LIMIT:
            rate = getattr(kernel, "_exp_rate", lambda: None)()
            if rate is not None:  # exp(c r²): the rate and s inside the GEMM, nothing kept but K
                K = exp_sq_dist(ac, bc, symmetric, rate, scale)
        if K is not None:
            ctx.kernel, ctx.symmetric = kernel, symmetric
            ctx.a_shape, ctx.b_shape = a.shape, (None if symmetric else b.shape)
            ctx.save_for_backward(ac, None if symmetric else bc, K, None, None, scale)
            return K
        r2 = pairwise_sq_dist(ac, bc, symmetric) if own is None else own(ac, bc).clamp_min(0)
        dk = None
        theta_grads = len(theta) > 0 and any(ctx.needs_input_grad[4:])
        if kernel.K_dK_r2 is not None and any(ctx.needs_input_grad[1:3]):
            K, dk = kernel.K_dK_r2(r2, *theta)  # k and k' share their costly parts (√r², exp)
        elif getattr(kernel, "_K_r2_", None) is not None and not kernel.dK_dr2_uses_r2 and not theta_grads:
            K = kernel._K_r2_(r2, *theta)  # r² is not needed again: κ in its buffer (one n × m pass fewer)
        else:
            K = kernel.K_r2(r2, *theta)
        if scale is not None:
            s = scale if scale.dim() == 0 else scale[..., None, None]  # 0-dim: broadcasts as it is
            in_place = (K is r2 or _owns(K, K, r2)) and _fits_in(K.shape, s.shape)
            K = K.mul_(s) if in_place else K * s  # K = s k(r²)
        keep_r2 = (kernel.dK_dr2_uses_r2 and dk is None) or theta_grads
        ctx.kernel, ctx.symmetric = kernel, symmetric
        ctx.a_shape, ctx.b_shape = a.shape, (None if symmetric else b.shape)
        ctx.save_for_backward(ac, None if symmetric else bc, K, r2 if keep_r2 else None, dk, scale, *theta)
        return K

    @staticmethod
    @once_differentiable
    def backward(ctx, G):
        ac, bc, K, r2, dk, scale, *theta = ctx.saved_tensors
        if ctx.symmetric and G.shape[-1] * G.shape[-2] > _SMALL and not G.is_contiguous() and G.mT.is_contiguous():
            # K = Kᵀ, so only G's symmetric part reaches the inputs and Gᵀ gives the same gradients. A column-major G
            # (the Cholesky backward's inverse) read as Gᵀ is row-major like K: each element-wise pass over the two
            # then streams both (float32, n = 500: 29 µs for G ∘ K against 172 µs with mixed layouts)
            G = G.mT
        kernel = ctx.kernel
        s = None if scale is None else (scale if scale.dim() == 0 else scale[..., None, None])
        need_a, need_b, need_s = ctx.needs_input_grad[1:4]
        grad_a = grad_b = grad_s = None
        factor = kernel.dK_dr2_factor
        k_unit = None  # κ(r²) = K / s, formed once if dK_dr2 or dK_dparams needs it
        coef = None  # the constant 2c of the closed form, times s where W lacks it (a (*batch, 1, 1) tensor then)
        if need_a or need_b or (need_s and factor is not None):
            if factor is not None:  # k' = c k: W = G ∘ K now, the constant c joins the O(n d) results below
                W = torch.mul(G, K)
            else:
                if dk is None:
                    k_unit = K if s is None else K * s.reciprocal()
                    dk = kernel.dK_dr2(r2, k_unit, *theta)
                    W = dk.mul_(G) if _owns(dk, G, K, r2, k_unit) else dk * G  # W = G ∘ k'(r²), one n × m buffer
                else:
                    W = dk * G  # k'(r²) kept from the forward
                factor = 1.0
                if s is not None:  # W ∘ s enters the O(n d) results only: s multiplies them, not the n × m W
                    coef = s * 2.0
            if coef is None:
                coef = 2 * factor
            if ctx.symmetric and W.shape[-1] * W.shape[-2] <= _SMALL:
                # few entries: fewest operations. S = W + Wᵀ (only its symmetric part reaches a symmetric K), then
                # ∂L/∂a = 2c ((S 1) ∘ a − S a) and, for k' = c k, Σ G ∘ K = ½ Σ S
                S = W + W.mT
                rows = S.sum(-1, keepdim=True)  # (*batch, n, 1)
                if need_s and kernel.dK_dr2_factor is not None:
                    grad_s = (rows.sum((-2, -1)) * (0.5 / scale)).sum_to_size(scale.shape)
                if need_a:
                    grad_a = (rows * ac).sub_(S @ ac)
                    grad_a = grad_a.mul_(coef) if _fits_in(grad_a.shape, getattr(coef, "shape", ())) else grad_a * coef
                    if grad_a.shape != ctx.a_shape:
                        grad_a = grad_a.sum_to_size(ctx.a_shape)
                del W, S
            else:
                if ctx.symmetric:
                    bc = ac
                b1 = torch.cat([bc, torch.ones_like(bc[..., :1])], dim=-1)  # [b, 1]: (*batch, m, d + 1)
                # [W b, W 1] and [Wᵀ a, Wᵀ 1]: the two products of the closed form above; [W b, W 1] as
                # ([b, 1]ᵀ Wᵀ)ᵀ, because BLAS streams W faster with the thin factor on the left (2-4x at n ≤ 1000, CPU)
                Wb = (b1.mT @ W.mT).mT
                if need_s and kernel.dK_dr2_factor is not None:
                    # ∂L/∂s = Σ G ∘ k = Σ (G ∘ K) / s: the row sums of W = G ∘ K, already formed
                    grad_s = (Wb[..., -1].sum(-1) / scale).sum_to_size(scale.shape)
                if ctx.symmetric:  # b = a: ∂L/∂a = 2c (((W + Wᵀ) 1) ∘ a − (W + Wᵀ) a), both products with [a, 1]
                    S = Wb + (b1.mT @ W).mT
                    grad_a = (coef * (S[..., -1:] * ac - S[..., :-1])).sum_to_size(ctx.a_shape)
                else:
                    if need_a:
                        grad_a = (coef * (Wb[..., -1:] * ac - Wb[..., :-1])).sum_to_size(ctx.a_shape)
                    if need_b:
                        Wa = (torch.cat([ac, torch.ones_like(ac[..., :1])], dim=-1).mT @ W).mT
                        grad_b = (coef * (Wa[..., -1:] * bc - Wa[..., :-1])).sum_to_size(ctx.b_shape)
                del W
        if need_s and grad_s is None and K.shape[-1] * K.shape[-2] <= _SMALL:
            grad_s = (torch.mul(G, K).sum((-2, -1)) / scale).sum_to_size(scale.shape)  # ∂L/∂s = Σ_ij G_ij K_ij / s
        elif need_s and grad_s is None:
            # ∂L/∂s = Σ_ij G_ij K_ij / s as a batched dot product (no n × m buffer); a symmetric K's G is row-major here
            Gf = G.expand(K.shape)
            flat_G, flat_K = (
                Gf.reshape(-1, 1, K.shape[-2] * K.shape[-1]),
                K.reshape(-1, K.shape[-2] * K.shape[-1], 1),
            )
            dots = torch.bmm(flat_G, flat_K).reshape(K.shape[:-2])
            grad_s = (dots / scale).sum_to_size(scale.shape)
        grad_theta = [None] * len(theta)
        wanted = [i for i, t in enumerate(theta) if ctx.needs_input_grad[4 + i]]
        closed = getattr(kernel, "dK_dparams", None)
        if wanted and closed is not None:
            # ∂L/∂θ_i = Σ_ij G_ij s ∂κ/∂θ_i(r²_ij): the profile's closed form, no autograd pass through κ
            if k_unit is None:
                k_unit = K if s is None else K * s.reciprocal()
            derivs = closed(r2, k_unit, *theta)
            for i in wanted:
                d = derivs[i]
                d = d.mul_(G) if _owns(d, G, K, r2, k_unit) else d * G
                if s is not None:
                    d = d.mul_(s) if _fits_in(d.shape, s.shape) else d * s
                grad_theta[i] = d.sum_to_size(theta[i].shape)
        elif wanted:
            with torch.enable_grad():
                leaves = [t.detach().requires_grad_(i in wanted) for i, t in enumerate(theta)]
                k = kernel.K_r2(r2, *leaves)
                if s is not None:
                    k = k * s
                grads = torch.autograd.grad(k, [leaves[i] for i in wanted], G)
            for i, g in zip(wanted, grads):
                grad_theta[i] = g.sum_to_size(theta[i].shape)
        return (None, grad_a, grad_b, grad_s, *grad_theta)


def stationary_covariance(
    kernel, a: torch.Tensor, b: torch.Tensor | None, *theta: torch.Tensor, scale: torch.Tensor | None = None
) -> torch.Tensor:
    """``K_ij = s · kernel.K_r2(‖a_i − b_j‖², *θ)``, ``(*batch, n, m)``, through :class:`StationaryCovariance`.

    Args:
        kernel: provides ``K_r2(r2, *θ)``, ``dK_dr2(r2, K, *θ)``, ``dK_dr2_uses_r2`` and ``dK_dr2_factor``.
        a: ``(*batch, n, d)`` scaled inputs; b: ``(*batch, m, d)``, or ``None`` for ``b = a``.
        theta: the profile's parameters, broadcastable against ``(*batch, n, m)``.
        scale: optional output scale ``s`` of shape ``(*batch)`` (a ``ScaleKernel``'s, fused in).
    """
    return StationaryCovariance.apply(kernel, a, b, scale, *theta)


class _Profile:
    """A stationary profile outside a kernel module (for GPyTorch's Function names below)."""

    dK_dr2_uses_r2 = True
    dK_dr2_factor = None
    K_dK_r2 = None

    def __init__(self, K_r2, dK_dr2, sq_dist_func=None, factor=None, uses_r2=True):
        self.K_r2, self.dK_dr2, self.sq_dist_func = K_r2, dK_dr2, sq_dist_func
        self.dK_dr2_factor, self.dK_dr2_uses_r2 = factor, uses_r2

    def _exp_rate(self):
        return None  # the caller's distance function defines r²: the general path


def _matern(nu: float):
    """κ and ∂κ/∂r² of the Matérn profile with smoothness ``nu`` (R&W eqs. 4.14, 4.17)."""
    if nu not in (0.5, 1.5, 2.5):
        raise ValueError(f"MaternCovariance: nu must be 0.5, 1.5 or 2.5; got {nu}.")
    s = math.sqrt(2 * nu)

    def K_r2(r2):
        r = r2.clamp_min(1e-30).sqrt()
        if nu == 0.5:
            return torch.exp(-r)
        poly = 1 + s * r if nu == 1.5 else 1 + s * r + (5.0 / 3.0) * r2
        return poly * torch.exp(-s * r)

    def dK_dr2(r2, K):
        r = r2.clamp_min(1e-30).sqrt()
        if nu == 0.5:
            return torch.where(r2 >= 1e-30, K / (-2 * r), 0.0)
        e = torch.exp(-s * r)
        return e.mul_(-1.5) if nu == 1.5 else e.mul_(1 + s * r).mul_(-5.0 / 6.0)

    return K_r2, dK_dr2


class RBFCovariance:
    r"""GPyTorch's ``RBFCovariance``: :math:`\exp(-\tfrac12 \lVert (x_1 - x_2)/\ell \rVert^2)` as one fused node.

    ``RBFCovariance.apply(x1 (*batch, n, d), x2 (*batch, m, d), lengthscale (*batch, 1, d), sq_dist_func)``
    → ``(*batch, n, m)``. ``sq_dist_func(a, b)`` gives the squared Euclidean distances of the scaled inputs
    (GPyTorch passes ``covar_dist(..., square_dist=True)``); the backward is the closed form for that distance
    and returns gradients for ``x1``, ``x2`` and the lengthscale.
    """

    @staticmethod
    def apply(x1, x2, lengthscale, sq_dist_func=None):
        profile = _Profile(lambda r2: r2.mul(-0.5).exp_(), lambda r2, K: K.mul(-0.5), sq_dist_func, -0.5, False)
        a = x1.div(lengthscale)
        return StationaryCovariance.apply(profile, a, None if x2 is x1 else x2.div(lengthscale), None)


class MaternCovariance:
    r"""GPyTorch's ``MaternCovariance``: the Matérn-ν matrix of ``r = ‖(x_1 − x_2)/ℓ‖`` as one fused node.

    ``MaternCovariance.apply(x1 (*batch, n, d), x2 (*batch, m, d), lengthscale (*batch, 1, d), nu, dist_func)``
    → ``(*batch, n, m)``, ``nu`` ∈ {0.5, 1.5, 2.5}. ``dist_func(a, b)`` gives the Euclidean distances of the
    scaled inputs (GPyTorch passes ``covar_dist``); gradients flow to ``x1``, ``x2`` and the lengthscale.
    """

    @staticmethod
    def apply(x1, x2, lengthscale, nu, dist_func=None):
        K_r2, dK_dr2 = _matern(nu)
        sq = None if dist_func is None else (lambda a, b: dist_func(a, b).square())
        profile = _Profile(K_r2, dK_dr2, sq)
        a = x1.div(lengthscale)
        return StationaryCovariance.apply(profile, a, None if x2 is x1 else x2.div(lengthscale), None)
