r"""Regular grids for structured kernel interpolation (KISS-GP): building them and scaling data into them.

Grids are lists of 1-D tensors, one per input dimension (``grid[i]`` of shape ``(g_i,)``); a legacy grid is
one ``(g, d)`` tensor whose columns are the dimensions.
"""

from __future__ import annotations

import math
import warnings

import torch

from torchgp.errors import InputError

__all__ = [
    "ScaleToBounds",
    "scale_to_bounds",
    "choose_grid_size",
    "convert_legacy_grid",
    "create_data_from_grid",
    "create_grid",
]


def _scale(x, min_val, max_val, lower_bound, upper_bound):
    # maps [min_val, max_val] affinely onto [0.95 lower_bound, 0.95 upper_bound], which leaves a margin
    # inside the bounds for the cubic interpolation stencil
    return (x - min_val) * (0.95 * (upper_bound - lower_bound) / (max_val - min_val)) + 0.95 * lower_bound


class ScaleToBounds(torch.nn.Module):
    """Scale inputs affinely into ``[0.95 lower_bound, 0.95 upper_bound]``.

    In training mode the minimum and maximum are taken from the batch given (over all its entries) and
    stored; in eval mode the stored ones are used and inputs are clamped to them first.

    Args:
        lower_bound: lower end of the target interval.
        upper_bound: upper end of the target interval.

    Shapes:
        ``forward(x)``: any shape ``(*batch, n, d)`` → the same shape.

    Example:
        >>> s = ScaleToBounds(-1.0, 1.0)
        >>> s(torch.tensor([0.0, 5.0, 10.0])).tolist()
        [-0.949999988079071, 0.0, 0.949999988079071]
    """

    def __init__(self, lower_bound, upper_bound):
        super().__init__()
        self.lower_bound = float(lower_bound)
        self.upper_bound = float(upper_bound)
        self.register_buffer("min_val", torch.tensor(lower_bound))
        self.register_buffer("max_val", torch.tensor(upper_bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            min_val, max_val = x.min(), x.max()
            self.min_val.data = min_val.detach()
            self.max_val.data = max_val.detach()
        else:
            min_val, max_val = self.min_val, self.max_val
            x = x.clamp(min_val, max_val)
        return _scale(x, min_val, max_val, self.lower_bound, self.upper_bound)


def scale_to_bounds(x: torch.Tensor, lower_bound: float, upper_bound: float) -> torch.Tensor:
    """Deprecated functional form of :class:`ScaleToBounds` in training mode (warns ``DeprecationWarning``).

    Shapes:
        ``x (*batch, n, d)`` → the same shape.
    """
    warnings.warn(
        "scale_to_bounds is deprecated; use the torchgp.utils.grid.ScaleToBounds module instead.",
        DeprecationWarning,
        stacklevel=2,
    )
    return _scale(x, x.min(), x.max(), lower_bound, upper_bound)


def choose_grid_size(train_inputs: torch.Tensor, ratio: float = 1.0, kronecker_structure: bool = True):
    r"""A grid size for KISS-GP with about ``ratio`` grid points per training point.

    With Kronecker structure the grid has ``g^d`` points, so :math:`g = \lfloor \text{ratio} \cdot n^{1/d} \rfloor`;
    without it (additive/product decompositions) every dimension gets ``ratio · n`` points.

    Args:
        train_inputs: ``(*batch, n, d)`` or ``(n,)``.
        ratio: grid points per data point.
        kronecker_structure: whether the grid is a Kronecker product over dimensions.

    Returns:
        ``int`` with Kronecker structure, else ``ratio * n``.
    """
    n = train_inputs.numel() if train_inputs.dim() == 1 else train_inputs.size(-2)
    d = 1 if train_inputs.dim() == 1 else train_inputs.size(-1)
    if kronecker_structure:
        return int(ratio * math.pow(n, 1.0 / d))
    return ratio * n


def convert_legacy_grid(grid: torch.Tensor) -> list[torch.Tensor]:
    """Columns of a legacy ``(g, d)`` grid tensor as a list of ``d`` tensors of shape ``(g,)``."""
    return [grid[:, i] for i in range(grid.size(-1))]


def create_data_from_grid(grid) -> torch.Tensor:
    """All points of the Cartesian product of the 1-D grids, the FIRST dimension varying fastest.

    Args:
        grid: list of ``d`` tensors of shapes ``(g_0,), ..., (g_{d-1},)`` (or a legacy ``(g, d)`` tensor).

    Returns:
        ``(g_0 · ... · g_{d-1}, d)``; row ``r`` is ``(grid[0][r % g_0], grid[1][(r // g_0) % g_1], ...)``.
    """
    if torch.is_tensor(grid):
        grid = convert_legacy_grid(grid)
    if any(axis.dim() != 1 for axis in grid):
        raise InputError(
            f"create_data_from_grid needs a list of 1-D tensors; got shapes {[tuple(a.shape) for a in grid]}."
        )
    # meshgrid with the dimensions reversed makes the first dimension the fastest-varying one
    mesh = torch.meshgrid(*reversed(grid), indexing="ij")
    return torch.stack([m.reshape(-1) for m in reversed(mesh)], dim=-1)


def create_grid(grid_sizes, grid_bounds, extend: bool = True, device="cpu", dtype=torch.float) -> list[torch.Tensor]:
    """One evenly spaced 1-D grid per dimension.

    With ``extend``, each grid reaches one spacing ``(upper - lower) / (g - 2)`` beyond both bounds, so
    points at the bounds still have interpolation neighbours on both sides.

    Args:
        grid_sizes: ``g_i`` per dimension (list of ints).
        grid_bounds: ``(lower_i, upper_i)`` per dimension.
        extend: extend the grid one spacing past each bound.
        device, dtype: of the returned tensors.

    Returns:
        list of tensors of shapes ``(g_i,)``.
    """
    grid = []
    for i, (lower, upper) in enumerate(grid_bounds):
        size = grid_sizes[i]
        if size < 3 and extend:
            raise InputError(f"an extended grid needs at least 3 points per dimension; got grid size {size}.")
        step = float(upper - lower) / (size - 2) if extend else 0.0
        grid.append(torch.linspace(lower - step, upper + step, size, device=device, dtype=dtype))
    return grid
