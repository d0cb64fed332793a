r"""Numerically careful special functions for the improvement-based acquisition functions.

:func:`log_h` is the core of LogEI (Ament et al. 2023, eq. 9); :func:`ndtr` replaces
``torch.special.ndtr``, which loses the lower tail.
"""

from __future__ import annotations

import math

import torch

_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)  # c₁ in Ament et al. (2023), eq. 9
_HALF_LOG_PI_OVER_2 = 0.5 * math.log(math.pi / 2)  # c₂ in Ament et al. (2023), eq. 9
_SQRT_2 = math.sqrt(2.0)


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    r"""``log(1 - exp(x))`` for ``x < 0``, accurate for all x (Mächler 2012).

    Shapes:
        ``x (*)`` → ``(*)``.
    """
    # Mächler (2012): log(-expm1(x)) near 0, log1p(-exp(x)) further out; each branch is fed only its own range
    # so that neither produces inf/NaN gradients that torch.where would propagate.
    near = x > -math.log(2.0)
    x_near = torch.where(near, x, torch.full_like(x, -1.0))
    x_far = torch.where(near, torch.full_like(x, -1.0), x)
    return torch.where(near, torch.log(-torch.expm1(x_near)), torch.log1p(-torch.exp(x_far)))


def log_h(z: torch.Tensor) -> torch.Tensor:
    r"""``log h(z)``, ``h(z) = φ(z) + zΦ(z)``, accurate and with finite gradients for every finite z.

    Ament et al. (2023), eq. 9, with a longer asymptotic series in the far tail:

    .. math::
        \log h(z) = \begin{cases}
            \log(\varphi(z) + z\Phi(z)) & z > -1 \\
            -z^2/2 - c_1 + \operatorname{log1mexp}\!\big(\log(\operatorname{erfcx}(-z/\sqrt2)\,|z|) + c_2\big)
                & z_t < z \le -1 \\
            -z^2/2 - c_1 - 2\log|z| + \log(1 - 3z^{-2} + 15z^{-4} - 105z^{-6} + 945z^{-8}) & z \le z_t
        \end{cases}

    with :math:`c_1 = \log\sqrt{2\pi}`, :math:`c_2 = \log\sqrt{\pi/2}`. The middle branch follows from
    :math:`\Phi(z) = \tfrac12\operatorname{erfcx}(-z/\sqrt2)\,e^{-z^2/2}`, so that
    :math:`h(z) = \varphi(z)\,[1 - |z|\operatorname{erfcx}(-z/\sqrt2)\sqrt{\pi/2}]`. The bracket is
    :math:`\approx z^{-2}`, computed from a difference of O(1) numbers, so its value loses
    :math:`\epsilon z^2` and its autograd derivative (erfcx' = 2x erfcx(x) − 2/√π cancels too) about as much.
    Ament et al. switch to the leading asymptote :math:`\varphi(z)/z^2` at :math:`z_t = -1/\sqrt\epsilon`,
    where the value is still fine but the gradient is off by O(1) relative. Here the asymptotic (Mills-ratio)
    series of the bracket, :math:`z^{-2}(1 - 3z^{-2} + 15z^{-4} - \dots)`, is carried to :math:`z^{-10}` and used
    from :math:`z_t = -\epsilon^{-1/6}` (≈ −407 in float64, −14 in float32), where its truncation error
    (:math:`10395\,z^{-10}`) is below ε and the middle branch is still accurate to ~1e-11 (value and gradient).

    The derivative is the closed form :math:`\tfrac{d}{dz}\log h(z) = \Phi(z)/h(z)` (since :math:`h' = \Phi`),
    written per branch as :math:`m / b` with the Mills ratio :math:`m = \Phi(z)/\varphi(z)` and the bracket
    :math:`b = h(z)/\varphi(z) = 1 - |z|\,m` (its series in the tail), so that it stays accurate where both
    :math:`\Phi` and :math:`h` underflow. One autograd node instead of one per elementary operation; a second
    derivative (``create_graph=True``) differentiates that closed form by autograd, which is accurate for
    moderate :math:`|z|` and loses precision far in the lower tail (as the branches' own autograd does).

    Shapes:
        ``z (*)`` → ``(*)``.
    """
    return _LogH.apply(z)[0]


def _upper_parts(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Branch ``z > -1`` of :func:`log_h`: ``log h`` and ``Φ/h`` on ``z`` clamped into it."""
    z_up = z.clamp_min(-1.0)
    cdf_up = ndtr(z_up)
    h_up = torch.exp(-0.5 * z_up**2) / math.sqrt(2 * math.pi) + z_up * cdf_up
    return torch.log(h_up), cdf_up / h_up


def _middle_parts(z: torch.Tensor, z_t: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Branch ``z_t < z <= -1``: the erfcx form, on ``z`` clamped into it."""
    z_mid = z.clamp(min=z_t, max=-1.0)
    mills = torch.special.erfcx(-z_mid / _SQRT_2) * math.sqrt(math.pi / 2)  # m = Φ(z)/φ(z)
    log_b_mid = log1mexp(torch.log(mills * z_mid.abs()))  # log b, b = 1 - |z| m = h(z)/φ(z)
    return -0.5 * z_mid**2 - _LOG_SQRT_2PI + log_b_mid, mills / torch.exp(log_b_mid)


def _tail_parts(z: torch.Tensor, z_t: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Branch ``z <= z_t``: the Mills-ratio series, on ``z`` clamped into it."""
    z_tail = z.clamp_max(z_t)
    w = z_tail.pow(-2)  # the series in w = z⁻², Horner form: b = w (1 - 3w + 15w² - 105w³ + 945w⁴)
    poly = w * (-3 + w * (15 + w * (-105 + w * 945)))
    asym = -0.5 * z_tail**2 - _LOG_SQRT_2PI - 2 * torch.log(z_tail.abs()) + torch.log1p(poly)
    b_tail = w * (1 + poly)
    return asym, (1 - b_tail) / (z_tail.abs() * b_tail)  # m = (1 - b)/|z|


def _log_h_parts(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log h(z), d/dz log h(z))`` by the three branches of :func:`log_h`, differentiable, ``(*)`` each.

    Each branch sees inputs clamped into its own domain (finite values and gradients everywhere). On the
    CPU, where checking the masks costs nothing, a branch no element falls into is not evaluated, and when
    all fall into one branch its result is returned as it is (the same numbers, a third of the work).
    """
    z_t = -(torch.finfo(z.dtype).eps ** (-1.0 / 6.0))
    upper = z > -1
    tail = z <= z_t
    if z.device.type == "cpu" and z.numel() > 0:
        if bool(upper.all()):
            return _upper_parts(z)
        if not bool(upper.any()) and not bool(tail.any()):
            return _middle_parts(z, z_t)
        if bool(tail.all()):
            return _tail_parts(z, z_t)
    up, mid, asym = _upper_parts(z), _middle_parts(z, z_t), _tail_parts(z, z_t)
    value = torch.where(upper, up[0], torch.where(tail, asym[0], mid[0]))
    slope = torch.where(upper, up[1], torch.where(tail, asym[1], mid[1]))
    return value, slope


class _LogH(torch.autograd.Function):
    """``log h(z)`` with the closed-form derivative ``Φ(z)/h(z)`` (one node; see :func:`log_h`)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(z):
        with torch.no_grad():
            return _log_h_parts(z)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0], output[1])
        ctx.mark_non_differentiable(output[1])

    @staticmethod
    def backward(ctx, g, _g_slope):
        z, slope = ctx.saved_tensors
        if torch.is_grad_enabled():  # a recorded backward (create_graph): the slope as a function of z
            slope = _log_h_parts(z)[1]
        return g * slope


def ndtr(z: torch.Tensor) -> torch.Tensor:
    """Standard normal CDF ``Φ(z) = ½ erfc(-z/√2)``, accurate in the lower tail, ``(*)`` → ``(*)``.

    ``torch.special.ndtr`` is not: it returns 6.1e-16 at z = -8 (true 6.2e-16) and 0 below z ≈ -8.3,
    which would make EI and PI silently wrong (and their gradients zero) there.
    """
    return 0.5 * torch.special.erfc(-z / _SQRT_2)


def h(z: torch.Tensor) -> torch.Tensor:
    """``h(z) = φ(z) + zΦ(z)`` (Jones et al. 1998, eq. 15), ``(*)`` → ``(*)``."""
    return torch.exp(-0.5 * z**2) / math.sqrt(2 * math.pi) + z * ndtr(z)
