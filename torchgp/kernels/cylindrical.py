r"""``CylindricalKernel``: a radial times an angular kernel on the unit ball (Oh et al. 2018, BOCK)."""

from __future__ import annotations

import torch

from torchgp.constraints import Positive
from torchgp.errors import InputError
from torchgp.kernels.kernel import Kernel


class CylindricalKernel(Kernel):
    r"""Cylindrical kernel of BOCK (Oh, Gavves & Welling 2018, eqs. 4-6) for inputs in the unit ball.

    With :math:`r = \lVert x \rVert` and :math:`a = x / r`,

    .. math::
        k(x, x') = k_{rad}\big(\kappa(r), \kappa(r')\big)\,
        \sum_{p=0}^{P-1} w_p\, (a^\top a')^p,\qquad
        \kappa(r) = 1 - (1 - r^{\alpha} + \epsilon)^{\beta}

    (:math:`\kappa` is the Kumaraswamy CDF warping the radius; zero coordinates are moved by
    :math:`\epsilon` so that :math:`r > 0`).

    Args:
        num_angular_weights: P, the degree of the angular polynomial plus one.
        radial_base_kernel: kernel on the one-column warped radii.
        eps: ε (default 1e-6).
        angular_weights_prior, angular_weights_constraint: prior/constraint on w (default ``Positive()``).
        alpha_prior, alpha_constraint, beta_prior, beta_constraint: priors/constraints on α, β.

    Raises:
        InputError: if a point lies outside the unit ball (the kernel is not defined there).

    Shapes:
        ``x1 (*batch, n, d)``, ``x2 (*batch, m, d)`` with ``‖x‖ ≤ 1`` → ``(*batch, n, m)``;
        ``angular_weights`` ``(*batch, P)``, ``alpha``, ``beta`` ``(*batch, 1)``.
    """

    _children_see_inputs = False  # the radial kernel sees one column of radii

    def __init__(
        self,
        num_angular_weights: int,
        radial_base_kernel: Kernel,
        eps: float | None = 1e-6,
        angular_weights_prior=None,
        angular_weights_constraint=None,
        alpha_prior=None,
        alpha_constraint=None,
        beta_prior=None,
        beta_constraint=None,
        **kwargs,
    ):
        if not isinstance(radial_base_kernel, Kernel):
            raise TypeError(f"CylindricalKernel needs a torchgp Kernel; got {type(radial_base_kernel).__name__}.")
        super().__init__(**kwargs)
        self.num_angular_weights = int(num_angular_weights)
        self.radial_base_kernel = radial_base_kernel
        self.eps = eps
        b = self.batch_shape
        for name, shape, prior, constraint in (
            ("angular_weights", (*b, self.num_angular_weights), angular_weights_prior, angular_weights_constraint),
            ("alpha", (*b, 1), alpha_prior, alpha_constraint),
            ("beta", (*b, 1), beta_prior, beta_constraint),
        ):
            constraint = Positive() if constraint is None else constraint
            self.register_constrained(name, constraint.transform(torch.zeros(shape)), constraint, prior)

    def kuma(self, r: torch.Tensor) -> torch.Tensor:
        r""":math:`\kappa(r) = 1 - (1 - r^\alpha + \epsilon)^\beta`, ``r (*batch, n, 1)`` → ``(*batch, n, 1)``."""
        alpha, beta = self.alpha.unsqueeze(-1), self.beta.unsqueeze(-1)
        return 1 - (1 - r.pow(alpha) + self.eps).pow(beta)

    def _polar(self, x: torch.Tensor):
        """``(r (*batch, n, 1), a (*batch, n, d))``: the radius of x (zeros moved by ε) and its direction."""
        r = torch.where(x == 0, x + self.eps, x).norm(dim=-1, keepdim=True)
        if torch.any(r > 1.0):
            raise InputError(
                f"CylindricalKernel is defined on the unit ball only; got a point of norm {r.max().item():.4g}. "
                "Rescale the inputs (e.g. x / (max ‖x‖ + 1e-3)) so that every ‖x‖ ≤ 1."
            )
        return r, x / r

    def _parts(self, x1, x2):
        r1, a1 = self._polar(x1)
        r2, a2 = (r1, a1) if x2 is x1 else self._polar(x2)
        k1 = self.kuma(r1)
        return k1, k1 if x2 is x1 else self.kuma(r2), a1, a2

    def _angular(self, cos: torch.Tensor, trailing: int) -> torch.Tensor:
        r""":math:`\sum_p w_p \cos^p` for ``cos`` of shape ``(*batch, n[, m])`` (``trailing`` = 1 or 2)."""
        w = self.angular_weights.movedim(-1, 0)  # (P, *batch)
        w = w.reshape(*w.shape, *([1] * trailing))
        return sum(w[p] * cos.pow(p) for p in range(self.num_angular_weights))

    def forward(self, x1, x2, **params):
        k1, k2, a1, a2 = self._parts(x1, x2)
        radial = self.radial_base_kernel.evaluate_block(k1, k2, **params)
        return radial * self._angular(a1 @ a2.mT, 2)

    def forward_diag(self, x1, x2, **params):
        k1, k2, a1, a2 = self._parts(x1, x2)
        radial = self.radial_base_kernel.evaluate_block(k1, k2, diag=True, **params)
        return radial * self._angular((a1 * a2).sum(-1), 1)

    def num_outputs_per_input(self, x1, x2) -> int:
        return self.radial_base_kernel.num_outputs_per_input(x1, x2)
