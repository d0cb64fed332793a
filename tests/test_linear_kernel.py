"""LinearKernel takes GPyTorch 1.15's arguments and gives its numbers."""

import inspect
import warnings

import pytest
import torch

import torchgp
from tests._tol import assert_close

gpytorch = pytest.importorskip("gpytorch")


def test_signature_is_gpytorchs():
    ours = list(inspect.signature(torchgp.kernels.LinearKernel.__init__).parameters)
    theirs = list(inspect.signature(gpytorch.kernels.LinearKernel.__init__).parameters)
    assert ours == theirs == ["self", "ard_num_dims", "variance_prior", "variance_constraint", "kwargs"]


@pytest.mark.parametrize("ard", [None, 3])
@pytest.mark.parametrize("batch", [(), (2,)])
def test_matrices_match_gpytorch(ard, batch):
    g = torch.Generator().manual_seed(0)
    ours = torchgp.kernels.LinearKernel(ard_num_dims=ard, batch_shape=torch.Size(batch)).double()
    theirs = gpytorch.kernels.LinearKernel(ard_num_dims=ard, batch_shape=torch.Size(batch)).double()
    assert ours.raw_variance.shape == theirs.raw_variance.shape
    raw = torch.randn(theirs.raw_variance.shape, generator=g, dtype=torch.float64)
    with torch.no_grad():
        ours.raw_variance.copy_(raw)
        theirs.raw_variance.copy_(raw)
    X1 = torch.randn(*batch, 5, 3, generator=g, dtype=torch.float64)
    X2 = torch.randn(*batch, 4, 3, generator=g, dtype=torch.float64)
    with torch.no_grad():
        assert_close(ours(X1, X2).to_dense(), theirs(X1, X2).to_dense())
        assert_close(ours(X1).to_dense(), theirs(X1).to_dense())
        assert_close(ours(X1, X1, diag=True), theirs(X1, X1, diag=True))


def test_gradcheck_in_float64():
    k = torchgp.kernels.LinearKernel(ard_num_dims=2).double()
    raw = torch.randn(1, 2, dtype=torch.float64, requires_grad=True)
    X1 = torch.randn(4, 2, dtype=torch.float64, requires_grad=True)
    X2 = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)

    def matrix(r, a, b):
        return torch.func.functional_call(k, {"raw_variance": r}, (a, b)).to_dense()

    assert torch.autograd.gradcheck(matrix, (raw, X1, X2))
    assert torch.autograd.gradcheck(lambda r, a: matrix(r, a, a), (raw, X1))


def test_old_keywords_warn_and_do_nothing():
    with pytest.warns(DeprecationWarning, match="num_dimensions"):
        k = torchgp.kernels.LinearKernel(num_dimensions=3)
    assert k.raw_variance.shape == (1, 1)
    with pytest.warns(DeprecationWarning, match="offset_prior"):
        torchgp.kernels.LinearKernel(offset_prior=torchgp.priors.NormalPrior(0.0, 1.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        torchgp.kernels.LinearKernel(ard_num_dims=2)
