r"""Kernels over function values and derivatives (derivative-observation GPs).

For a GP ``f`` with kernel ``k``, the derivatives are jointly Gaussian with ``f``:

.. math:: \mathrm{cov}\Big(\frac{\partial f(x)}{\partial x_i}, \frac{\partial f(x')}{\partial x'_j}\Big)
          = \frac{\partial^2 k(x, x')}{\partial x_i\, \partial x'_j}

(R&W 2006, §9.4). Each kernel here returns, for ``x1 (*batch, n, d)`` and ``x2 (*batch, m, d)``, the matrix over
``n (d + 1)`` rows (``2d + 1`` for ``…GradGrad``) in GPyTorch's interleaved order: row ``p (d + 1) + c`` is point ``p``
and output ``c`` (``0`` the value, ``c = i`` the derivative along dimension ``i``, then the second derivatives
``∂²/∂x_i²`` for ``GradGrad``). Use them with a ``MultitaskMultivariateNormal`` of ``d + 1`` tasks.

Stationary kernels are written through their profile ``k = φ(s)``, ``s = Σ_k u_k² / ℓ_k²``, ``u = x − x'``; with
``a_k = ∂s/∂x_k = 2u_k/ℓ_k²`` (``∂s/∂x'_k = −a_k``) and ``c_k = 2/ℓ_k²`` the chain rule gives

.. math::
    \partial_i k = \varphi' a_i,\quad \partial'_j k = -\varphi' a_j,\quad
    \partial_i\partial'_j k = -\varphi'' a_i a_j - \varphi' c_i \delta_{ij}

(and the fourth-order blocks of :class:`RBFKernelGradGrad` below).
"""

from __future__ import annotations

import math

import torch

from torchgp._shapes import broadcast_shapes
from torchgp.kernels.dot_product import PolynomialKernel
from torchgp.kernels.stationary import MaternKernel, RBFKernel
from torchgp.linalg.operators import DenseOperator

__all__ = ["RBFKernelGrad", "RBFKernelGradGrad", "Matern52KernelGrad", "PolynomialKernelGrad"]


def _interleave(blocks, n: int, m: int) -> torch.Tensor:
    """Blocks ``B[c][c'] (*batch, n, m)`` → ``(*batch, n C, m C')``, row ``p C + c``, column ``q C' + c'``."""
    rows = [torch.stack(row, -1) for row in blocks]  # each (*batch, n, m, C')
    full = torch.stack(rows, -3)  # (*batch, n, C, m, C')
    return full.reshape(*full.shape[:-4], n * len(blocks), m * len(blocks[0]))


class _DerivativeKernel:
    """What the derivative kernels share: the output count, dense evaluation and the lazy form."""

    _orders = 1  # 1: values and gradients; 2: plus the diagonal second derivatives

    def num_outputs_per_input(self, x1, x2) -> int:
        return 1 + self._orders * x1.shape[-1]

    def output_shape(self, x1, x2, last_dim_is_batch: bool = False, **params) -> torch.Size:
        batch = broadcast_shapes(x1.shape[:-2], x2.shape[:-2], self.batch_shape)
        c = self.num_outputs_per_input(x1, x2)
        return torch.Size([*batch, x1.shape[-2] * c, x2.shape[-2] * c])

    def _select(self, x):
        return x if self.active_dims is None else x.index_select(-1, self.active_dims)

    def evaluate_block(self, x1, x2, diag: bool = False, last_dim_is_batch: bool = False, **params):
        """Dense ``(*batch, n C, m C)`` (``C`` outputs per point), or its diagonal ``(*batch, n C)``."""
        if last_dim_is_batch:
            raise NotImplementedError(f"{type(self).__name__} does not support last_dim_is_batch.")
        x1, x2 = self._select(x1), self._select(x2)
        if diag:
            return self.forward(x1, x2, diag=True)
        return self.forward(x1, x2)

    def _lazy(self, x1, x2, last_dim_is_batch: bool = False, **params):
        return DenseOperator(self.evaluate_block(x1, x2, last_dim_is_batch=last_dim_is_batch, **params))


def _stationary_parts(kernel, x1, x2, diag: bool = False):
    """``(s, a, c)`` for the profile form above: ``s (*b, n, m)``, ``a (*b, n, m, d)``, ``c`` broadcastable to ``a``.

    With ``diag`` the ``n`` aligned pairs ``(x1_p, x2_p)`` only: ``s (*b, n)``, ``a (*b, n, d)``.
    """
    ls2 = kernel.lengthscale.pow(2)  # (*batch, 1, d)
    if diag:
        u = x1 - x2  # (*b, n, d)
    else:
        u = x1.unsqueeze(-2) - x2.unsqueeze(-3)  # (*b, n, m, d)
        ls2 = ls2.unsqueeze(-2)
    s = (u.pow(2) / ls2).sum(-1)
    a = 2 * u / ls2
    c = (2 / ls2).expand(*ls2.shape[:-1], u.shape[-1])
    return s, a, c


def _assemble(blocks, x1, x2, diag: bool) -> torch.Tensor:
    """The interleaved matrix of ``blocks`` (each ``(*b, n, m)``), or with ``diag`` (each ``(*b, n)``) its diagonal."""
    if diag:
        d = torch.stack([blocks[c][c] for c in range(len(blocks))], -1)  # (*b, n, C)
        return d.reshape(*d.shape[:-2], -1)
    return _interleave(blocks, x1.shape[-2], x2.shape[-2])


def _grad_blocks(phi, a, c, d: int):
    """Value/gradient blocks from ``phi = [φ, φ', φ'']`` (each ``(*b, n, m)``)."""
    p0, p1, p2 = phi[:3]
    blocks = [[p0] + [-p1 * a[..., j] for j in range(d)]]
    for i in range(d):
        row = [p1 * a[..., i]]
        for j in range(d):
            v = -p2 * a[..., i] * a[..., j]
            if i == j:
                v = v - p1 * c[..., i]
            row.append(v)
        blocks.append(row)
    return blocks


class RBFKernelGrad(_DerivativeKernel, RBFKernel):
    r"""RBF kernel over values and first derivatives: ``φ(s) = e^{−s/2}``, ``n (d + 1)`` rows.

    Args: as :class:`~torchgp.kernels.RBFKernel` (``ard_num_dims``, ``batch_shape``, ``lengthscale_*``).

    Shapes:
        ``x1 (*batch, n, d)``, ``x2 (*batch, m, d)`` → ``(*batch, n (d+1), m (d+1))``;
        ``diag=True`` → ``(*batch, n (d+1))``.
    """

    @staticmethod
    def _profile(s, order: int):
        """``[φ, φ', …, φ^{(order)}]`` of ``φ(s) = exp(−s/2)``: ``φ^{(k)} = (−½)^k φ``."""
        e = torch.exp(-0.5 * s)
        return [(-0.5) ** k * e for k in range(order + 1)]

    def forward(self, x1, x2, diag: bool = False, **params):
        s, a, c = _stationary_parts(self, x1, x2, diag)
        return _assemble(_grad_blocks(self._profile(s, 2), a, c, x1.shape[-1]), x1, x2, diag)


class Matern52KernelGrad(_DerivativeKernel, MaternKernel):
    r"""Matérn-5/2 kernel over values and first derivatives, ``φ(s) = (1 + √5 r + 5r²/3) e^{−√5 r}``, ``r = √s``.

    .. math:: \varphi'(s) = -\tfrac56 (1 + \sqrt5 r) e^{-\sqrt5 r},\qquad \varphi''(s) = \tfrac{25}{12} e^{-\sqrt5 r}

    (both finite at ``r = 0``, so the derivative process exists).

    Shapes:
        as :class:`RBFKernelGrad`.
    """

    def __init__(self, **kwargs):
        kwargs.pop("nu", None)
        super().__init__(nu=2.5, **kwargs)

    @staticmethod
    def _profile(s, order: int = 2):
        # r = √s with a zero gradient at s = 0: there ∂s/∂x = ∂s/∂ℓ = 0, so the chain rule needs no ∂r/∂s (= ∞)
        r = torch.where(s > 0, s.clamp_min(torch.finfo(s.dtype).tiny).sqrt(), torch.zeros_like(s))
        e = torch.exp(-math.sqrt(5) * r)
        phi = (1 + math.sqrt(5) * r + 5.0 / 3.0 * s) * e
        return [phi, -5.0 / 6.0 * (1 + math.sqrt(5) * r) * e, 25.0 / 12.0 * e]

    def forward(self, x1, x2, diag: bool = False, **params):
        s, a, c = _stationary_parts(self, x1, x2, diag)
        return _assemble(_grad_blocks(self._profile(s), a, c, x1.shape[-1]), x1, x2, diag)


class RBFKernelGradGrad(_DerivativeKernel, RBFKernel):
    r"""RBF kernel over values, first derivatives and the diagonal second derivatives ``∂²f/∂x_i²``: ``2d + 1`` outputs.

    Beyond :class:`RBFKernelGrad`'s blocks (``∂_i²`` on ``x``, ``∂'_j{}^2`` on ``x'``):

    .. math::
        \partial_i^2 k = \varphi'' a_i^2 + \varphi' c_i,\qquad
        \partial_i \partial'^2_j k = \varphi''' a_i a_j^2 + \varphi'' (a_i c_j + 2 a_j c_j \delta_{ij}),

        \partial_i^2\partial'^2_j k = \varphi'''' a_i^2 a_j^2
        + \varphi''' (c_i a_j^2 + a_i^2 c_j + 4 a_i a_j c_j\delta_{ij})
        + \varphi'' (c_i c_j + 2 c_j^2 \delta_{ij})

    Shapes:
        ``(*batch, n (2d+1), m (2d+1))``.
    """

    _orders = 2

    def forward(self, x1, x2, diag: bool = False, **params):
        d = x1.shape[-1]
        s, a, c = _stationary_parts(self, x1, x2, diag)
        p0, p1, p2, p3, p4 = RBFKernelGrad._profile(s, 4)
        g = _grad_blocks([p0, p1, p2], a, c, d)  # (d + 1) × (d + 1)
        A = [a[..., i] for i in range(d)]
        C = [c[..., i] for i in range(d)]

        def d1sq(i):  # ∂_i² k (second derivative in x), also ∂'_i² k
            return p2 * A[i] ** 2 + p1 * C[i]

        def d1_d2sq(i, j):  # ∂_i ∂'_j² k
            v = p3 * A[i] * A[j] ** 2 + p2 * A[i] * C[j]
            return v + 2 * p2 * A[j] * C[j] if i == j else v

        def d1sq_d2(i, j):  # ∂_i² ∂'_j k = −(∂_j ∂'_i² k with x and x' exchanged): odd in u
            v = -p3 * A[j] * A[i] ** 2 - p2 * A[j] * C[i]
            return v - 2 * p2 * A[i] * C[i] if i == j else v

        def d1sq_d2sq(i, j):
            v = p4 * A[i] ** 2 * A[j] ** 2 + p3 * (C[i] * A[j] ** 2 + A[i] ** 2 * C[j]) + p2 * C[i] * C[j]
            return v + 4 * p3 * A[i] * A[j] * C[j] + 2 * p2 * C[j] ** 2 if i == j else v

        rows = []
        for r in range(d + 1):
            extra = [d1sq(j) if r == 0 else d1_d2sq(r - 1, j) for j in range(d)]
            rows.append(g[r] + extra)
        for i in range(d):
            rows.append([d1sq(i)] + [d1sq_d2(i, j) for j in range(d)] + [d1sq_d2sq(i, j) for j in range(d)])
        return _assemble(rows, x1, x2, diag)


class PolynomialKernelGrad(_DerivativeKernel, PolynomialKernel):
    r"""Polynomial kernel ``k = (xᵀx' + c)^p`` over values and first derivatives, with ``z = xᵀx' + c``:

    .. math:: \partial_i k = p z^{p-1} x'_i,\quad \partial'_j k = p z^{p-1} x_j,\quad
              \partial_i\partial'_j k = p(p-1) z^{p-2} x'_i x_j + p z^{p-1}\delta_{ij}

    Args: as :class:`~torchgp.kernels.PolynomialKernel` (``power``, ``offset_*``).

    Shapes:
        as :class:`RBFKernelGrad`.
    """

    def forward(self, x1, x2, diag: bool = False, **params):
        d = x1.shape[-1]
        p = self.power
        if diag:  # the aligned pairs (x1_p, x2_p)
            z = (x1 * x2).sum(-1) + self.offset  # (*b, n)
            x1e, x2e = x1, x2
        else:
            z = x1 @ x2.mT + self.offset.unsqueeze(-1)  # (*b, n, m)
            x1e, x2e = x1.unsqueeze(-2), x2.unsqueeze(-3)  # (*b, n, 1, d), (*b, 1, m, d)
        k0, k1 = z.pow(p), p * z.pow(p - 1)
        k2 = p * (p - 1) * z.pow(p - 2) if p >= 2 else torch.zeros_like(z)
        shape = broadcast_shapes(z.shape, x1e.shape[:-1], x2e.shape[:-1])
        blocks = [[k0] + [k1 * x1e[..., j] for j in range(d)]]
        for i in range(d):
            row = [k1 * x2e[..., i]]
            for j in range(d):
                v = k2 * x2e[..., i] * x1e[..., j]
                row.append(v + k1 if i == j else v)
            blocks.append(row)
        return _assemble([[b.expand(shape) for b in row] for row in blocks], x1, x2, diag)
