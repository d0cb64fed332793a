r"""``GridKernel``: exact Kronecker and Toeplitz structure of a separable kernel on a regular grid.

On the Cartesian grid ``U = U_1 × … × U_d`` a kernel that factorises over dimensions,
``k(x, x') = k(u₀, u₀)^{1-d} Π_i k_i(x_i, x'_i)`` with ``k_i`` the kernel along dimension ``i`` through a grid
point ``u₀`` (the RBF kernel, ARD or not, a scaled one, products of one-dimensional kernels), has the
covariance ``K_UU = K_1 ⊗ … ⊗ K_d`` (Saatçi 2012, §5.2.2). Each factor of a stationary kernel on a regular
1-D grid is symmetric Toeplitz (:class:`~torchgp.linalg.toeplitz.ToeplitzOperator`). A kernel that does not
factorise gets the Kronecker product of its one-dimensional slices, the same approximation GPyTorch makes.
"""

from __future__ import annotations

import math

import torch

from torchgp import settings
from torchgp._shapes import broadcast_shapes
from torchgp.errors import ShapeError
from torchgp.kernels.kernel import Kernel
from torchgp.linalg.operators import DenseOperator, KroneckerProductOperator, Operator
from torchgp.linalg.toeplitz import ToeplitzOperator
from torchgp.utils.grid import convert_legacy_grid, create_data_from_grid

__all__ = ["GridKernel"]


def _as_grid_list(grid) -> list[torch.Tensor]:
    if torch.is_tensor(grid):
        if grid.dim() == 1:
            return [grid]
        if grid.dim() != 2:
            raise ShapeError(f"grid must be a (g, d) tensor or a list of 1-D tensors; got shape {tuple(grid.shape)}.")
        return convert_legacy_grid(grid)
    grid = list(grid)
    if not grid or any(not torch.is_tensor(g) or g.dim() != 1 for g in grid):
        raise ShapeError("grid must be a (g, d) tensor or a non-empty list of 1-D tensors, one per dimension.")
    return grid


def _is_regular(axis: torch.Tensor) -> bool:
    """Evenly spaced up to the round-off of the grid's dtype (a float32 ``linspace`` of 10⁴ points has spacings
    that differ by ~6e-8 absolute, 6e-4 relative): ``|Δ_j − h| ≤ 64 ε max|u| + 10⁻⁶ h``."""
    if axis.numel() < 3:
        return True
    step = axis.diff()
    h = (axis[-1] - axis[0]) / (axis.numel() - 1)
    atol = 64 * torch.finfo(axis.dtype).eps * float(axis.abs().max()) + 1e-6 * float(h.abs())
    return bool(((step - h).abs() <= atol).all())


class GridKernel(Kernel):
    r"""A base kernel evaluated on a regular grid with Kronecker (and Toeplitz) structure.

    .. math:: K_{UU} = K_1 \otimes \dots \otimes K_d,\qquad (K_i)_{ab} = k\big(u_0 + (u_{i,a} - u_{0,i}) e_i,\;
       u_0 + (u_{i,b} - u_{0,i}) e_i\big) / k(u_0, u_0)^{[i > 1]}

    (exact for kernels that factorise over dimensions; Saatçi 2012, §5.2.2).

    Args:
        base_kernel: the kernel on the grid.
        grid: a ``(g, d)`` tensor (column ``i`` the grid of dimension ``i``) or a list of ``d`` 1-D tensors
            ``(g_i,)`` (sizes may differ).
        interpolation_mode: if True, ``forward`` returns ``K_UU`` whatever the inputs (used by
            :class:`~torchgp.kernels.GridInterpolationKernel`); if False, inputs that are the grid's points in
            the order of :func:`torchgp.utils.grid.create_data_from_grid` (the first dimension fastest) get the
            Kronecker operator, and other inputs the base kernel's own matrix.
        active_dims: as :class:`Kernel`.

    Shapes:
        ``kernel(X)`` with ``X (Π g_i, d)`` the grid's points → a ``(*batch, Π g_i, Π g_i)``
        :class:`~torchgp.linalg.KroneckerProductOperator` (Toeplitz factors for a stationary base kernel on a
        regular grid), solved with ``σ² I`` by per-factor eigendecompositions.
    """

    def __init__(self, base_kernel: Kernel, grid, interpolation_mode: bool = False, active_dims=None):
        super().__init__(active_dims=active_dims)
        self.base_kernel = base_kernel
        self.interpolation_mode = bool(interpolation_mode)
        self.update_grid(grid)

    @property
    def batch_shape(self) -> torch.Size:
        return self.base_kernel.batch_shape

    @batch_shape.setter
    def batch_shape(self, value):
        self.base_kernel.batch_shape = value

    @property
    def is_stationary(self) -> bool:
        return self.base_kernel.is_stationary

    @property
    def num_dims(self) -> int:
        return len(self._grid_names)

    @property
    def grid(self) -> list[torch.Tensor]:
        """The 1-D grids, one ``(g_i,)`` tensor per dimension."""
        return [getattr(self, name) for name in self._grid_names]

    @property
    def grid_sizes(self) -> list[int]:
        return [g.numel() for g in self.grid]

    def update_grid(self, grid) -> GridKernel:
        """Replace the grid (a ``(g, d)`` tensor or a list of 1-D tensors) in place."""
        grid = _as_grid_list(grid)
        for name in getattr(self, "_grid_names", []):
            delattr(self, name)
        self._grid_names = [f"grid_{i}" for i in range(len(grid))]
        for name, axis in zip(self._grid_names, grid):
            self.register_buffer(name, axis.detach().clone())
        self._regular = [_is_regular(axis) for axis in grid]
        return self

    @property
    def full_grid(self) -> torch.Tensor:
        """All grid points, ``(Π g_i, d)``, the first dimension fastest (:func:`create_data_from_grid`)."""
        return create_data_from_grid(self.grid)

    # ------------------------------------------------------------------ the grid covariance
    def axis(self, i: int, dtype=None, device=None) -> torch.Tensor:
        """Grid ``i`` in ``dtype``: a regular grid is rebuilt as ``linspace(first, last, g_i)`` in that dtype, so that
        it is exactly regular there (a float32 grid cast to float64 is regular only to 1e-7, which would make the
        Toeplitz ``K_UU`` differ from the kernel matrix by as much and turn it indefinite)."""
        g = getattr(self, self._grid_names[i])
        dtype, device = dtype or g.dtype, device or g.device
        if self._regular[i] and g.numel() > 1:
            return torch.linspace(float(g[0]), float(g[-1]), g.numel(), dtype=dtype, device=device)
        return g.to(dtype=dtype, device=device)

    def _factor(self, i: int, dtype, device) -> Operator:
        """``K_i`` ``(*batch, g_i, g_i)``: the base kernel along dimension ``i`` through the first grid point;
        Toeplitz (its first column) for a stationary kernel on a regular grid under ``settings.use_toeplitz``, else
        the dense matrix."""
        grid = [self.axis(j, dtype, device) for j in range(self.num_dims)]
        u0 = torch.stack([g[0] for g in grid])
        pts = u0.expand(grid[i].numel(), len(grid)).clone()
        pts[:, i] = grid[i]
        if self.base_kernel.is_stationary and self._regular[i] and settings.use_toeplitz.on():
            column = self.base_kernel.evaluate_block(pts[:1], pts)[..., 0, :]  # k(u_0, u_j) = c_j
            return ToeplitzOperator(column)
        return DenseOperator(self.base_kernel.evaluate_block(pts, pts))

    def grid_covariance(self, dtype=None, device=None, reverse: bool = False) -> KroneckerProductOperator:
        """``K_UU = K_1 ⊗ … ⊗ K_d`` (``reverse``: ``K_d ⊗ … ⊗ K_1``, the order of :attr:`full_grid`),
        ``(*batch, Π g_i, Π g_i)``; the factor product is rescaled by ``k(u₀, u₀)^{1-d}``."""
        ref = self.grid[0]
        dtype, device = dtype or ref.dtype, device or ref.device
        factors = [self._factor(i, dtype, device) for i in range(self.num_dims)]
        if len(factors) > 1:
            c0 = factors[0].diagonal()[..., 0]  # k(u₀, u₀), (*batch)
            factors[0] = factors[0]._scale(c0.pow(1 - len(factors)))
        return KroneckerProductOperator(*(factors[::-1] if reverse else factors))

    def _on_grid(self, x: torch.Tensor) -> bool:
        """Whether ``x (*batch, N, d)`` is the grid's points in the order of :attr:`full_grid` (an O(N d) check)."""
        if x.shape[-1] != self.num_dims or x.shape[-2] != math.prod(self.grid_sizes):
            return False
        return torch.equal(x, self.full_grid.to(x).expand_as(x))

    def _covariance(self, x1, x2) -> Operator:
        """``K_UU`` as a Kronecker operator when the inputs are the grid (or in interpolation mode), else the base
        kernel's own matrix ``k(x1, x2)``: the same numbers without the structure."""
        if not self.interpolation_mode and not (self._on_grid(x1) and (x2 is x1 or self._on_grid(x2))):
            return self.base_kernel(x1, x2)
        K = self.grid_covariance(x1.dtype, x1.device, reverse=not self.interpolation_mode)
        batch = broadcast_shapes(K.batch_shape, x1.shape[:-2], x2.shape[:-2])
        return K.expand(*batch, *K.shape[-2:])

    def _lazy(self, x1, x2, last_dim_is_batch: bool = False, **params):
        if last_dim_is_batch or params:
            return super()._lazy(x1, x2, last_dim_is_batch=last_dim_is_batch, **params)
        if self.active_dims is not None:
            same = x1 is x2
            x1 = x1.index_select(-1, self.active_dims)
            x2 = x1 if same else x2.index_select(-1, self.active_dims)
        return self._covariance(x1, x2)

    def forward(self, x1, x2, **params):
        return self._covariance(x1, x2).to_dense()

    def forward_diag(self, x1, x2, **params):
        if not self.interpolation_mode and not (self._on_grid(x1) and self._on_grid(x2)):
            return self.base_kernel.evaluate_block(x1, x2, diag=True)
        return self._covariance(x1, x2).diagonal()
