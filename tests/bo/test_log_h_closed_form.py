"""``log_h``'s closed-form derivative Φ(z)/h(z): equal to autograd through its branches, gradcheck-clean."""

from __future__ import annotations

import math

import mpmath
import pytest
import torch

from torchgp.bo import log_h
from torchgp.bo.numerics import _log_h_parts

# every branch: upper (z > -1), middle (-ε^{-1/6} < z ≤ -1), far tail, and both branch points' neighbourhoods
Z = [-1e6, -2000.0, -408.0, -406.0, -60.0, -7.5, -1.2, -1.0, -0.7, 0.0, 0.3, 4.0, 25.0]


def _autograd_slope(z: torch.Tensor) -> torch.Tensor:
    """d/dz of the branch formulas' value, by plain autograd through every elementary operation."""
    z = z.detach().clone().requires_grad_(True)
    value, _ = _log_h_parts(z)
    (grad,) = torch.autograd.grad(value.sum(), z)
    return grad


def test_closed_form_slope_equals_autograd_through_the_branches():
    z = torch.tensor(Z, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(log_h(z).sum(), z)
    # autograd through the branches loses ~ε z² in the middle branch (see log_h): compare where it is exact
    ok = z.detach().abs() < 100
    torch.testing.assert_close(grad[ok], _autograd_slope(z)[ok], rtol=1e-9, atol=0)


@pytest.mark.parametrize("z0", [-1e6, -2000.0, -406.0, -60.0, -1.0])
def test_slope_matches_high_precision_in_the_tail(z0):
    with mpmath.workdps(80):
        zm = mpmath.mpf(z0)
        ref = float(mpmath.ncdf(zm) / (mpmath.npdf(zm) + zm * mpmath.ncdf(zm)))
    z = torch.tensor(z0, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(log_h(z), z)
    assert grad.item() == pytest.approx(ref, rel=1e-9)
    assert math.isfinite(grad.item())


def test_gradcheck_and_second_derivative():
    z = torch.tensor([-50.0, -3.0, -1.5, -0.5, 0.0, 2.0], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(log_h, (z,), eps=1e-6, atol=1e-8, rtol=1e-6)
    # the second derivative differentiates the slope's formulas by autograd: accurate near the incumbent only
    near = z.detach()[1:].clone().requires_grad_(True)
    assert torch.autograd.gradgradcheck(log_h, (near,), eps=1e-6, atol=1e-7, rtol=1e-5)


def test_batched_shapes_and_float32():
    z = torch.linspace(-30, 5, 24, dtype=torch.float32).reshape(2, 3, 4).requires_grad_(True)
    out = log_h(z)
    assert out.shape == z.shape and out.dtype == torch.float32
    (grad,) = torch.autograd.grad(out.sum(), z)
    assert torch.isfinite(grad).all() and (grad > 0).all()  # log h is increasing: h' = Φ > 0


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_one_branch_shortcut_gives_the_mixed_evaluations_numbers(dtype):
    """All elements in one branch: only that branch is evaluated; the numbers equal those of a mixed tensor."""
    mixed = torch.tensor(Z, dtype=dtype)
    value, slope = _log_h_parts(mixed)
    z_t = -(torch.finfo(dtype).eps ** (-1.0 / 6.0))
    groups = [mixed > -1, (mixed <= -1) & (mixed > z_t), mixed <= z_t]
    assert all(g.sum() >= 2 for g in groups)  # each branch alone, with more than one element
    for g in groups:
        v, s = _log_h_parts(mixed[g])
        torch.testing.assert_close(v, value[g], rtol=0, atol=0)
        torch.testing.assert_close(s, slope[g], rtol=0, atol=0)
