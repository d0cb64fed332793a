r"""``GridInterpolationKernel``: structured kernel interpolation, KISS-GP (Wilson & Nickisch 2015).

.. math:: k(X, X') \approx W_X\, K_{UU}\, W_{X'}^\top

with ``K_UU`` the base kernel on a regular grid (Toeplitz in 1-D, a Kronecker product of Toeplitz factors in
``d`` dimensions, :class:`~torchgp.kernels.GridKernel`) and ``W`` local cubic interpolation weights (Keys 1981;
``4^d`` non-zeros per row, :class:`~torchgp.utils.interpolation.Interpolation`). A product with the kernel
matrix costs ``O(n 4^d + m log m)`` (Wilson & Nickisch 2015, §3.1), so the exact marginal likelihood runs on
the iterative path (CG and stochastic Lanczos quadrature through these products) at ``n`` in the millions.
"""

from __future__ import annotations

import torch

from torchgp.errors import InputError, ShapeError
from torchgp.kernels.grid import GridKernel
from torchgp.kernels.kernel import Kernel
from torchgp.linalg.interpolated import InterpolatedOperator
from torchgp.utils.grid import create_grid
from torchgp.utils.interpolation import Interpolation

__all__ = ["GridInterpolationKernel"]

# Cubic interpolation reads 4 grid points per dimension (Keys 1981): a smaller grid cannot hold one stencil.
_MIN_GRID = 4
# A grid chosen from the data leaves this many spacings between the data and each end of the grid, so every
# point has its full 4-point stencil (two neighbours on each side).
_MARGIN = 2.01


def _bounds_list(grid_bounds, num_dims):
    if grid_bounds is None:
        return None
    grid_bounds = list(grid_bounds)
    if len(grid_bounds) == 2 and all(isinstance(b, (int, float)) for b in grid_bounds):
        grid_bounds = [tuple(grid_bounds)] * (num_dims or 1)  # one (lower, upper) pair for every dimension
    out = []
    for i, b in enumerate(grid_bounds):
        lo, hi = (float(v) for v in b)
        if not hi > lo:
            raise InputError(f"grid_bounds[{i}] = ({lo}, {hi}) must have lower < upper.")
        out.append((lo, hi))
    return out


class GridInterpolationKernel(GridKernel):
    r"""KISS-GP: ``k(X, X') ≈ W_X K_UU W_X'ᵀ`` on a regular grid of ``m = Π g_i`` points.

    Args:
        base_kernel: the kernel interpolated (stationary for Toeplitz structure; separable over dimensions
            for ``d > 1``, see :class:`~torchgp.kernels.GridKernel`).
        grid_size: grid points per dimension, an int or one per dimension (at least 4 for cubic interpolation).
        num_dims: input dimension ``d`` (needed unless ``grid_bounds`` or a list ``grid_size`` says it).
        grid_bounds: ``(lower, upper)`` per dimension; the grid reaches one spacing beyond them, and data
            outside raises :class:`~torchgp.errors.InputError`. If None the grid follows the data: it is placed
            over the inputs of the first call, with two spacings to spare on each side, and moved out
            whenever later inputs leave it.
        active_dims: as :class:`Kernel`.

    Shapes:
        ``kernel(x1 (*batch, n, d), x2 (*batch, n', d))`` → a lazy
        :class:`~torchgp.linalg.interpolated.InterpolatedOperator` ``(*batch, n, n')``.

    Example:
        >>> import torch, torchgp
        >>> k = torchgp.kernels.GridInterpolationKernel(torchgp.kernels.RBFKernel(), grid_size=100, num_dims=1)
        >>> x = torch.linspace(0, 1, 50, dtype=torch.float64).unsqueeze(-1)
        >>> k = k.double()
        >>> exact = torchgp.kernels.RBFKernel().double()(x).to_dense()
        >>> bool((k(x).to_dense() - exact).abs().max() < 1e-4)
        True
    """

    def __init__(self, base_kernel: Kernel, grid_size, num_dims: int | None = None, grid_bounds=None, active_dims=None):
        bounds = _bounds_list(grid_bounds, num_dims if num_dims is not None else None)
        sizes = [int(grid_size)] if isinstance(grid_size, int) else [int(g) for g in grid_size]
        if num_dims is None:
            num_dims = len(bounds) if bounds is not None else (len(sizes) if not isinstance(grid_size, int) else None)
        if num_dims is None:
            raise InputError(
                "GridInterpolationKernel needs num_dims (the input dimension) when grid_bounds is not given and "
                "grid_size is a single int."
            )
        if isinstance(grid_size, int):
            sizes = sizes * num_dims
        if len(sizes) != num_dims:
            raise InputError(f"grid_size gives {len(sizes)} sizes but num_dims = {num_dims}; give one per dimension.")
        if bounds is not None and len(bounds) != num_dims:
            raise InputError(f"grid_bounds gives {len(bounds)} (lower, upper) pairs but num_dims = {num_dims}.")
        if min(sizes) < _MIN_GRID:
            raise InputError(
                f"grid_size must be at least {_MIN_GRID} in every dimension for cubic interpolation (each point reads "
                f"4 grid points per dimension); got {sizes}."
            )
        self.grid_is_dynamic = bounds is None
        self.grid_bounds = tuple(bounds) if bounds is not None else tuple((-1.0, 1.0) for _ in range(num_dims))
        grid = create_grid(sizes, self.grid_bounds)
        super().__init__(base_kernel, grid, interpolation_mode=True, active_dims=active_dims)
        self.register_buffer("has_initialized_grid", torch.tensor(not self.grid_is_dynamic))

    # ------------------------------------------------------------------ the grid follows dynamic data
    def _fit_grid(self, x: torch.Tensor):
        """Move a data-following grid so that ``x (N, d)`` lies at least two spacings inside it."""
        lo, hi = x.detach().amin(0), x.detach().amax(0)
        if bool(self.has_initialized_grid):
            inside = all(float(lo[i]) >= float(g[2]) and float(hi[i]) <= float(g[-3]) for i, g in enumerate(self.grid))
            if inside:
                return
        bounds, grid = [], []
        for i, g in enumerate(self.grid_sizes):
            a, b = float(lo[i]), float(hi[i])
            span = max(b - a, 1e-6 * max(abs(a), abs(b), 1.0))
            step = span / (g - 1 - 2 * _MARGIN)
            a, b = a - _MARGIN * step, a - _MARGIN * step + (g - 1) * step
            bounds.append((a, b))
            grid.append(torch.linspace(a, b, g, dtype=x.dtype, device=x.device))
        self.grid_bounds = tuple(bounds)
        self.update_grid(grid)
        self.has_initialized_grid.fill_(True)

    def _interpolation(self, x: torch.Tensor):
        """``(indices, values)`` ``(*batch, n, 4^d)`` of ``x (*batch, n, d)`` on the grid."""
        if x.shape[-1] != self.num_dims:
            raise ShapeError(
                f"GridInterpolationKernel was built for num_dims={self.num_dims} input dimensions but got inputs with "
                f"{x.shape[-1]} (shape {tuple(x.shape)}). Select columns with active_dims, or for many dimensions use "
                "AdditiveStructureKernel / ProductStructureKernel over a 1-D GridInterpolationKernel."
            )
        flat = x.reshape(-1, x.shape[-1])
        grid = [self.axis(i, x.dtype, x.device) for i in range(self.num_dims)]
        idx, val = Interpolation().interpolate(grid, flat)
        return idx.reshape(*x.shape[:-1], -1), val.reshape(*x.shape[:-1], -1)

    def _covariance(self, x1, x2) -> InterpolatedOperator:
        if self.grid_is_dynamic:
            both = (
                x1.reshape(-1, x1.shape[-1])
                if x1 is x2
                else torch.cat([x1.reshape(-1, x1.shape[-1]), x2.reshape(-1, x2.shape[-1])])
            )
            if both.shape[-1] == self.num_dims:
                self._fit_grid(both)
        K_UU = self.grid_covariance(x1.dtype, x1.device)
        li, lv = self._interpolation(x1)
        if x1 is x2:
            return InterpolatedOperator(K_UU, li, lv)
        ri, rv = self._interpolation(x2)
        return InterpolatedOperator(K_UU, li, lv, ri, rv)
