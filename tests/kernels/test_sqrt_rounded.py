"""``sqrt_rounded``: the correctly rounded square root the Matérn profiles take their distances from."""

import math
import warnings

import numpy as np
import pytest
import torch

from tests._tol import assert_close
from torchgp.kernels import MaternKernel
from torchgp.kernels.distance import sqrt_rounded


def test_float64_equals_the_ieee_square_root_of_every_entry():
    t = torch.rand(6, 30, 40, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 50
    got = sqrt_rounded(t)
    want = [math.sqrt(v) for v in t.reshape(-1).tolist()]  # correctly rounded by IEEE 754
    assert got.shape == t.shape and got.dtype == torch.float64
    assert got.reshape(-1).tolist() == want


def test_float32_equals_the_float64_root_rounded_once():
    t = torch.rand(80, 90, dtype=torch.float32, generator=torch.Generator().manual_seed(1))
    want = torch.from_numpy(np.sqrt(t.numpy().astype(np.float64)).astype(np.float32))
    assert torch.equal(sqrt_rounded(t), want)  # √ of a float32 rounded from float64 is the correctly rounded one


def test_zero_negative_and_a_fresh_result():
    t = torch.full((80, 80), 2.25, dtype=torch.float64)
    t[0, :3] = torch.tensor([0.0, 4.0, -1e-17])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a negative entry is NaN without a warning, as torch.sqrt makes it
        out = sqrt_rounded(t)
    assert out[0, :2].tolist() == [0.0, 2.0] and math.isnan(out[0, 2]) and bool((out[1:] == 1.5).all())
    out[0, 0] = 7.0
    assert t[0, 0] == 0.0  # the input is not written


@pytest.mark.parametrize("kind", ["transposed", "grad"])
def test_other_tensors_take_torch_sqrt_with_its_gradient(kind):
    t = torch.rand(5, 6, dtype=torch.float64) + 0.5
    if kind == "transposed":
        assert_close(sqrt_rounded(t.mT), t.mT.sqrt())
        return
    t.requires_grad_(True)
    out = sqrt_rounded(t)
    (g,) = torch.autograd.grad(out.sum(), t)
    assert_close(g, 0.5 / t.detach().sqrt())  # d√t/dt = 1 / (2√t)


def test_matern_matrix_and_gradient_match_the_closed_form():
    # R&W eq. 4.17, k_{5/2}(r) = (1 + √5 r + 5/3 r²) e^{−√5 r}, through the fused node that uses sqrt_rounded
    g = torch.Generator().manual_seed(2)
    X = torch.rand(40, 3, dtype=torch.float64, generator=g)
    k = MaternKernel(nu=2.5).double()
    k.lengthscale = 0.7
    K = k(X).to_dense()
    r = torch.cdist(X / 0.7, X / 0.7)
    assert_close(K, (1 + math.sqrt(5) * r + 5.0 / 3.0 * r**2) * torch.exp(-math.sqrt(5) * r))
    K.sum().backward()
    raw = k.raw_lengthscale
    with torch.no_grad():
        eps = 1e-6
        f = []
        for s in (eps, -eps):
            raw.add_(s)
            f.append(float(k(X).to_dense().sum()))
            raw.sub_(s)
    assert float(raw.grad) == pytest.approx((f[0] - f[1]) / (2 * eps), rel=1e-6)
