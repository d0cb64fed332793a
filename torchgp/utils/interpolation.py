r"""Cubic convolution interpolation onto regular grids, the ``W`` of KISS-GP's ``K ≈ W K_UU Wᵀ``.

Wilson & Nickisch (2015) interpolate each point from the 4 nearest grid points per dimension with the
cubic convolution kernel of Keys (1981, eq. 15, a = -1/2):

.. math::

    u(s) = \begin{cases} \tfrac32 |s|^3 - \tfrac52 |s|^2 + 1 & |s| \le 1 \\
                         -\tfrac12 |s|^3 + \tfrac52 |s|^2 - 4|s| + 2 & 1 < |s| < 2 \\
                         0 & \text{otherwise,} \end{cases}

with ``s`` the distance to a grid point in units of the grid spacing. In ``d`` dimensions the weights are
products over dimensions, so each point has ``4^d`` (index, weight) pairs, stored as two ``(n, 4^d)``
tensors; :func:`left_interp` computes ``W v`` and :func:`left_t_interp` ``Wᵀ v`` from them.
"""

from __future__ import annotations

import torch

from torchgp._shapes import broadcast_shapes
from torchgp.errors import InputError, ShapeError
from torchgp.utils.grid import convert_legacy_grid

__all__ = ["Interpolation", "left_interp", "left_t_interp"]


class Interpolation:
    """Cubic interpolation weights of target points on a grid (Keys 1981)."""

    def _cubic_interpolation_kernel(self, scaled_grid_dist: torch.Tensor) -> torch.Tensor:
        """``u(s)`` of Keys (1981, eq. 15) elementwise, for distances in grid spacings (any shape)."""
        U = scaled_grid_dist.abs()
        inner = ((1.5 * U - 2.5) * U) * U + 1  # |s| <= 1
        outer = (((-0.5 * U + 2.5) * U - 4) * U) + 2  # 1 < |s| < 2
        return torch.where(U < 1, inner, torch.where(U < 2, outer, torch.zeros_like(U)))

    def interpolate(self, x_grid, x_target: torch.Tensor, interp_points=range(-2, 2), eps: float = 1e-10):
        """Interpolation indices and weights of ``x_target`` on ``x_grid``.

        Points closer to the grid's ends than the stencil reaches get weight 1 on their nearest grid point.

        Args:
            x_grid: list of ``d`` 1-D evenly spaced grids ``(g_i,)`` (or a legacy ``(g, d)`` tensor).
            x_target: ``(n, d)`` points inside the grid's bounds.
            interp_points: offsets of the stencil relative to the grid point left of a target.
            eps: smallest grid spacing used (guards a zero spacing).

        Returns:
            ``(indices, values)``, both ``(n, c^d)`` with ``c = len(interp_points)``: indices into the
            flattened grid (last dimension fastest: index ``Σ_i j_i Π_{l>i} g_l``) and their weights.

        Raises:
            InputError: a target lies outside the grid.
        """
        if torch.is_tensor(x_grid):
            x_grid = convert_legacy_grid(x_grid)
        n, d = x_target.shape[-2], x_target.shape[-1]
        if x_target.dim() != 2 or d != len(x_grid):
            raise ShapeError(
                f"x_target must have shape (n, d) with d = {len(x_grid)} grid dimensions; got {tuple(x_target.shape)}."
            )
        offsets = torch.tensor(list(interp_points), dtype=x_grid[0].dtype, device=x_grid[0].device)
        c = offsets.numel()
        shift = offsets.max()
        # distance to the j-th stencil point, in spacings, is rel + flip(offsets)[j]
        flipped = offsets.flip(0)
        index_steps = (offsets - offsets.min()).long()
        indices = torch.zeros(n, *([1] * d), dtype=torch.long, device=x_target.device)
        values = torch.ones(n, *([1] * d), dtype=x_grid[0].dtype, device=x_target.device)
        stride = 1
        per_dim = []
        for i in reversed(range(d)):
            per_dim.append((i, stride))
            stride *= x_grid[i].numel()
        for i, stride in per_dim:
            grid = x_grid[i]
            g = grid.numel()
            t = x_target[:, i].to(grid.dtype)
            lo, hi = grid.min(), grid.max()
            if bool((t < lo - 1e-7).any()) or bool((t > hi + 1e-7).any()):
                raise InputError(
                    f"x_target is outside the grid in dimension {i}: the grid spans ({lo.item():.3f}, "
                    f"{hi.item():.3f}) but the targets span ({t.min().item():.3f}, {t.max().item():.3f}). "
                    "Build the grid over the data's range (torchgp.utils.grid.create_grid) or scale the data "
                    "into it (torchgp.utils.grid.ScaleToBounds)."
                )
            delta = (grid[1] - grid[0]).clamp_min(eps)
            pos = (t - grid[0]) / delta
            floor = torch.floor(pos)
            w = self._cubic_interpolation_kernel((pos - floor).unsqueeze(-1) + flipped)  # (n, c)
            first = (floor - shift).detach().long()  # leftmost stencil index
            # near the ends the stencil would leave the grid: all weight on the nearest grid point there
            left = first < 0
            right = first > g - c
            if bool(left.any()) or bool(right.any()):
                ends = torch.where(right, g - c, 0)
                near = torch.stack([grid[:c], grid[-c:]])[right.long()]  # (n, c) the c end points
                nearest = (near - t.unsqueeze(-1)).abs().argmin(-1)
                one_hot = torch.nn.functional.one_hot(nearest, c).to(w.dtype)
                edge = (left | right).unsqueeze(-1)
                w = torch.where(edge, one_hot, w)
                first = torch.where(left | right, ends, first)
            idx = first.unsqueeze(-1) + index_steps  # (n, c)
            view = [n] + [1] * d
            view[1 + i] = c
            indices = indices + (idx * stride).view(view)
            values = values * w.view(view)
        return indices.reshape(n, -1), values.reshape(n, -1)


def left_interp(interp_indices: torch.Tensor, interp_values: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    r"""``W · rhs`` for the sparse interpolation matrix ``W`` given by its (index, value) pairs.

    .. math:: (W v)_i = \sum_j \text{values}_{ij}\, v_{\text{indices}_{ij}}

    Args:
        interp_indices: ``(*batch, n, k)`` long indices into the ``m`` rows of ``rhs``.
        interp_values: ``(*batch, n, k)`` weights.
        rhs: ``(*batch, m, t)`` or ``(m,)``.

    Returns:
        ``(*batch, n, t)`` (``(*batch, n)`` for a 1-D ``rhs``).
    """
    vector = rhs.dim() == 1
    R = rhs.unsqueeze(-1) if vector else rhs
    batch = broadcast_shapes(interp_indices.shape[:-2], R.shape[:-2])
    idx = interp_indices.expand(*batch, *interp_indices.shape[-2:])
    R = R.expand(*batch, *R.shape[-2:])
    n, k = idx.shape[-2:]
    gathered = torch.gather(R, -2, idx.reshape(*batch, n * k, 1).expand(*batch, n * k, R.shape[-1]))
    res = (gathered.view(*batch, n, k, R.shape[-1]) * interp_values.unsqueeze(-1)).sum(-2)
    return res.squeeze(-1) if vector else res


def left_t_interp(
    interp_indices: torch.Tensor, interp_values: torch.Tensor, rhs: torch.Tensor, output_dim: int
) -> torch.Tensor:
    r"""``Wᵀ · rhs`` for the interpolation matrix ``W`` (``n × output_dim``) given by (index, value) pairs.

    .. math:: (W^\top v)_g = \sum_{i, j:\ \text{indices}_{ij} = g} \text{values}_{ij}\, v_i

    Args:
        interp_indices: ``(*batch, n, k)`` long indices in ``[0, output_dim)``.
        interp_values: ``(*batch, n, k)`` weights.
        rhs: ``(*batch, n, t)`` or ``(n,)``.
        output_dim: ``m``, the number of grid points.

    Returns:
        ``(*batch, m, t)`` (``(*batch, m)`` for a 1-D ``rhs``).
    """
    vector = rhs.dim() == 1
    R = rhs.unsqueeze(-1) if vector else rhs
    batch = broadcast_shapes(interp_indices.shape[:-2], interp_values.shape[:-2], R.shape[:-2])
    n, k = interp_indices.shape[-2:]
    t = R.shape[-1]
    idx = interp_indices.expand(*batch, n, k).reshape(*batch, n * k, 1).expand(*batch, n * k, t)
    contrib = (interp_values.unsqueeze(-1) * R.unsqueeze(-2)).expand(*batch, n, k, t).reshape(*batch, n * k, t)
    out = torch.zeros(*batch, output_dim, t, dtype=contrib.dtype, device=contrib.device)
    res = out.scatter_add(-2, idx, contrib)
    return res.squeeze(-1) if vector else res
