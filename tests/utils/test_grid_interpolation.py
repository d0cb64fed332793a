"""Grids and cubic interpolation: GPyTorch's numbers, dense interpolation, and exactness on cubics."""

from __future__ import annotations

import warnings

import pytest
import torch

from tests._tol import assert_close
from torchgp.errors import InputError
from torchgp.utils.grid import (
    ScaleToBounds,
    choose_grid_size,
    create_data_from_grid,
    create_grid,
    scale_to_bounds,
)
from torchgp.utils.interpolation import Interpolation, left_interp, left_t_interp

gpytorch = pytest.importorskip("gpytorch")
SIZES = [10, 7, 6]


def _case(d, seed=0):
    g = torch.Generator().manual_seed(seed)
    grid = create_grid(SIZES[:d], [(0.0, 1.0)] * d, dtype=torch.float64)
    x = torch.rand(40, d, generator=g, dtype=torch.float64) * 1.2 - 0.1  # reaches into the extended margin
    x[0] = torch.stack([a[0] for a in grid])  # exactly on the grid's first corner
    x[1] = torch.stack([a[-1] for a in grid])  # and its last
    return grid, x


def _dense_W(idx, val, m):
    W = torch.zeros(idx.shape[0], m, dtype=val.dtype)
    return W.scatter_add(-1, idx, val)


@pytest.mark.parametrize("d", [1, 2, 3])
def test_grid_and_interpolation_equal_gpytorch(d):
    grid, x = _case(d)
    theirs_grid = gpytorch.utils.grid.create_grid(SIZES[:d], [(0.0, 1.0)] * d, dtype=torch.float64)
    for a, b in zip(grid, theirs_grid, strict=True):
        assert torch.equal(a, b)
    assert torch.equal(create_data_from_grid(grid), gpytorch.utils.grid.create_data_from_grid(theirs_grid))
    idx, val = Interpolation().interpolate(grid, x)
    idx_g, val_g = gpytorch.utils.interpolation.Interpolation().interpolate(theirs_grid, x)
    assert torch.equal(idx, idx_g)
    assert_close(val, val_g)


@pytest.mark.parametrize("d", [1, 2])
def test_left_interp_and_transpose_equal_dense_products(d):
    grid, x = _case(d)
    idx, val = Interpolation().interpolate(grid, x)
    m = int(torch.tensor(SIZES[:d]).prod())
    W = _dense_W(idx, val, m)
    g = torch.Generator().manual_seed(1)
    V = torch.randn(m, 3, generator=g, dtype=torch.float64)
    U = torch.randn(x.shape[0], 3, generator=g, dtype=torch.float64)
    assert_close(left_interp(idx, val, V), W @ V)
    assert_close(left_interp(idx, val, V[:, 0]), W @ V[:, 0])
    assert_close(left_t_interp(idx, val, U, m), W.T @ U)
    assert_close(left_t_interp(idx, val, U[:, 0], m), W.T @ U[:, 0])
    # batched right-hand sides broadcast against one W
    Vb = torch.randn(2, m, 3, generator=g, dtype=torch.float64)
    assert_close(left_interp(idx, val, Vb), W @ Vb)
    assert_close(left_t_interp(idx, val, torch.stack([U, 2 * U]), m), torch.stack([W.T @ U, 2 * W.T @ U]))


def test_weights_sum_to_one_and_reproduce_a_quadratic_inside():
    grid = create_grid([30], [(0.0, 1.0)], dtype=torch.float64)
    x = torch.linspace(0.05, 0.95, 17, dtype=torch.float64).unsqueeze(-1)
    idx, val = Interpolation().interpolate(grid, x)
    assert_close(val.sum(-1), torch.ones(17, dtype=torch.float64))
    # Keys' kernel interpolates polynomials up to degree 2 exactly (third-order accurate)
    f = lambda t: 1 - 2 * t + 3 * t**2  # noqa: E731
    assert_close(left_interp(idx, val, f(grid[0])), f(x[:, 0]))
    # and is interpolating: weight 1 on a grid point a target sits on
    on = grid[0][5:8].unsqueeze(-1)
    idx, val = Interpolation().interpolate(grid, on)
    assert_close(left_interp(idx, val, grid[0]), on[:, 0])


def test_interpolation_gradient_matches_finite_differences():
    grid = create_grid([12], [(0.0, 1.0)], dtype=torch.float64)
    x = torch.tensor([[0.31], [0.52]], dtype=torch.float64, requires_grad=True)
    values = torch.sin(4 * grid[0])

    def f(x):
        idx, val = Interpolation().interpolate(grid, x)
        return left_interp(idx, val, values)

    assert torch.autograd.gradcheck(f, (x,))


def test_out_of_bounds_target_is_refused():
    grid = create_grid([8], [(0.0, 1.0)], extend=False, dtype=torch.float64)
    with pytest.raises(InputError, match="outside the grid"):
        Interpolation().interpolate(grid, torch.tensor([[1.5]], dtype=torch.float64))


def test_scale_to_bounds_train_eval_and_gpytorch():
    x = torch.tensor([[2.0, -1.0], [5.0, 3.0]])
    ours, theirs = ScaleToBounds(-1.0, 2.0), gpytorch.utils.grid.ScaleToBounds(-1.0, 2.0)
    assert_close(ours(x), theirs(x))
    assert_close(ours(x).min(), torch.tensor(-0.95))
    assert_close(ours(x).max(), torch.tensor(1.9))
    ours.eval(), theirs.eval()
    z = torch.tensor([[10.0, 0.0]])  # beyond the training range: clamped
    assert_close(ours(z), theirs(z))
    assert "min_val" in ours.state_dict()
    with pytest.warns(DeprecationWarning):
        out = scale_to_bounds(x, -1.0, 2.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert_close(out, gpytorch.utils.grid.scale_to_bounds(x, -1.0, 2.0))


def test_choose_grid_size_equals_gpytorch():
    for shape, kron in [((100,), True), ((100, 2), True), ((64, 3), True), ((50, 2), False)]:
        x = torch.zeros(shape)
        for ratio in (1.0, 2.5):
            ours = choose_grid_size(x, ratio=ratio, kronecker_structure=kron)
            assert ours == gpytorch.utils.grid.choose_grid_size(x, ratio=ratio, kronecker_structure=kron)
