"""Linear and polynomial kernels."""

from __future__ import annotations

import pytest
import torch

from tests._tol import assert_close
from torchgp import kernels, priors
from torchgp.errors import InputError


def test_linear():
    k = kernels.LinearKernel(variance_prior=priors.GammaPrior(2.0, 1.0)).double()
    k.variance = 0.7
    X, Z = torch.randn(5, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    assert_close(k(X, Z).to_dense(), 0.7 * X @ Z.T)
    assert [n for n, *_ in k.named_priors()] == ["variance_prior"]


@pytest.mark.parametrize("power", [1, 2, 3])
def test_polynomial(power):
    k = kernels.PolynomialKernel(power=power).double()
    k.offset = 0.4
    X, Z = torch.randn(5, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    assert_close(k(X, Z).to_dense(), (X @ Z.T + 0.4) ** power)


@pytest.mark.parametrize("power", [0, 1.5, -1])
def test_polynomial_rejects_bad_power(power):
    with pytest.raises(InputError, match="integer >= 1"):
        kernels.PolynomialKernel(power=power)
